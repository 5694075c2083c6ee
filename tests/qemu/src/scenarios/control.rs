//! The control plane on worker-1, worker-2 and a witness: failover when a worker dies or
//! hangs, when the Raft leader dies, nothing moving when the witness dies, an isolated
//! worker creating nothing, scaling, and bad `xylem` commands. The replica promise (refills,
//! the crash-loop budget, fenced singletons, honest writes, status) is in `promise.rs`.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::scenarios::membership::wait_all_alive;
use crate::{ensure, Env, HarnessError};

const CMD: Duration = Duration::from_secs(10);
const CONVERGE: Duration = Duration::from_secs(40);

/// Boots the three nodes and waits until membership and a Raft leader are up.
pub fn start(env: &Env, name: &str, seed: u64) -> Result<Cluster, HarnessError> {
    let mut cluster = Cluster::start(env, name, 3, seed)?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    wait_leader(&mut cluster, &[1, 2, 3])?;
    Ok(cluster)
}

/// Waits until every listed node agrees on one Raft leader; returns its id.
pub fn wait_leader(cluster: &mut Cluster, ids: &[u64]) -> Result<u64, HarnessError> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mut leaders = Vec::new();
        for &id in ids {
            let out = cluster.node(id).command("raft", CMD)?;
            leaders.push(
                out.split("(id ")
                    .nth(1)
                    .and_then(|s| s.split(')').next())
                    .and_then(|s| s.parse::<u64>().ok()),
            );
        }
        if let Some(Some(first)) = leaders.first() {
            if leaders.iter().all(|l| *l == Some(*first)) {
                return Ok(*first);
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no agreed Raft leader among {ids:?}: {leaders:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One row of the cell table of `xylem status`: (cell name `svc/slot@epoch`, node, state).
pub fn cell_table(status: &str) -> Vec<(String, String, String)> {
    status
        .lines()
        .skip_while(|l| !l.starts_with("CELL "))
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let node = words.next()?;
            let state = words.next()?;
            name.contains('/')
                .then(|| (name.to_string(), node.to_string(), state.to_string()))
        })
        .collect()
}

/// The nodes running a cell of `service`, one entry per running cell, from `xylem status` on
/// `observer`.
pub fn running_cells(
    cluster: &mut Cluster,
    observer: u64,
    service: &str,
) -> Result<Vec<String>, HarnessError> {
    let status = cluster.node(observer).command("xylem status", CMD)?;
    let prefix = format!("{service}/");
    Ok(cell_table(&status)
        .into_iter()
        .filter(|(name, _, state)| name.starts_with(&prefix) && state == "running")
        .map(|(_, node, _)| node)
        .collect())
}

/// Whether a write answered that it committed (`committed at index N`).
pub fn committed(out: &str) -> bool {
    out.starts_with("committed at index ")
}

/// Waits until `observer` sees exactly `want` running cells of `service`, spread as `nodes`.
pub fn wait_running(
    cluster: &mut Cluster,
    observer: u64,
    service: &str,
    want: &[&str],
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mut got = running_cells(cluster, observer, service)?;
        got.sort();
        let mut expected: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        expected.sort();
        if got == expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            let status = cluster.node(observer).command("xylem status", CMD)?;
            return Err(HarnessError::Check(format!(
                "{service}: expected running on {expected:?}, got {got:?}\n{status}"
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until `observer` sees `n` running cells of `service`, wherever they run.
pub fn wait_count(
    cluster: &mut Cluster,
    observer: u64,
    service: &str,
    n: usize,
) -> Result<Vec<String>, HarnessError> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let cells = running_cells(cluster, observer, service)?;
        if cells.len() == n {
            return Ok(cells);
        }
        ensure!(
            Instant::now() < deadline,
            "{service}: expected {n} running, got {cells:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Applies `service` (hello) with `replicas` on worker-1.
pub fn apply(cluster: &mut Cluster, service: &str, replicas: u16) -> Result<(), HarnessError> {
    let out = cluster.node(1).command(
        &format!("xylem apply {service} --payload hello --replicas {replicas}"),
        CMD,
    )?;
    ensure!(committed(&out), "apply printed {out:?}");
    Ok(())
}

/// Kill worker-2: worker-1 ends up running both replicas.
pub fn kill_worker(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-kill", 21)?;
    apply(&mut cluster, "web", 2)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    cluster.node(2).signal(libc::SIGKILL)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"])?;
    let status = cluster.node(1).command("xylem status", CMD)?;
    ensure!(
        status.contains("Healthy"),
        "service not healthy after failover:\n{status}"
    );
    Ok(())
}

/// What the survivor's kernel saw during one failover, in ms after the fault was injected
/// (COM2 timestamps mapped to the host clock).
#[derive(Debug, Clone)]
pub struct Failover {
    pub node_down_ms: f64,
    pub assign_committed_ms: f64,
    pub cell_running_ms: f64,
}

/// Injects `signal` into worker-2 while `service` runs one replica on each worker, and
/// measures until worker-1 runs the replacement. worker-1's clock is read just before the
/// fault and again once the replacement runs; its COM2 times map to host time through the
/// fit of all its readings (`Node::host_instant`), which also corrects the rate of a clock
/// whose boot calibration was off, exactly as the run's timeline does.
pub fn measure_failover(
    cluster: &mut Cluster,
    signal: i32,
    service: &str,
) -> Result<Failover, HarnessError> {
    let (_, mark) = cluster.node(1).clock_sample()?;
    let injected = Instant::now();
    cluster.node(2).signal(signal)?;
    let deadline = injected + CONVERGE;
    loop {
        let events: Vec<_> = cluster
            .node(1)
            .events()
            .into_iter()
            .filter(|e| e.t_us > mark)
            .collect();
        let down = events
            .iter()
            .find(|e| e.kind == "node_down" && e.get("peer") == Some("2"));
        let assign = events.iter().find(|e| {
            e.kind == "xylem_commit"
                && e.get("op") == Some("assign")
                && e.get("service") == Some(service)
                && e.get("target") == Some("1")
        });
        let started = assign.and_then(|a| {
            events.iter().find(|e| {
                e.kind == "xylem_action"
                    && e.get("action") == Some("spawn")
                    && e.get("epoch") == a.get("epoch")
            })
        });
        let running = started.and_then(|s| {
            events
                .iter()
                .find(|e| e.kind == "cell_start" && e.get("cell") == s.get("cell"))
        });
        if let (Some(down), Some(assign), Some(running)) = (down, assign, running) {
            let times = (down.t_us, assign.t_us, running.t_us);
            cluster.node(1).clock_sample()?;
            let node = cluster.node(1);
            let host_ms = |t_us: u64| -> Result<f64, HarnessError> {
                let at = node
                    .host_instant(t_us)
                    .ok_or_else(|| HarnessError::Check("no clock readings".into()))?;
                Ok(at.saturating_duration_since(injected).as_secs_f64() * 1000.0)
            };
            return Ok(Failover {
                node_down_ms: host_ms(times.0)?,
                assign_committed_ms: host_ms(times.1)?,
                cell_running_ms: host_ms(times.2)?,
            });
        }
        ensure!(
            Instant::now() < deadline,
            "no failover within {CONVERGE:?}: node_down={down:?} assign={assign:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGSTOP worker-2: its replica moves; SIGCONT: it rejoins, its stale cell is stopped
/// (fencing), and exactly two replicas run.
pub fn hang_worker(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-hang", 22)?;
    apply(&mut cluster, "web", 2)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    cluster.node(2).signal(libc::SIGSTOP)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"])?;
    cluster.node(2).signal(libc::SIGCONT)?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"])?;
    wait_running(&mut cluster, 2, "web", &["worker-1", "worker-1"])?;
    let ls = cluster.node(2).command("cell ls", CMD)?;
    ensure!(
        !ls.lines().any(|l| l.contains("running")),
        "worker-2 still runs a stale cell:\n{ls}"
    );
    Ok(())
}

/// Kill the worker that leads Raft: a new leader is elected and the replica moves.
pub fn kill_leader(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-kill-leader", 23)?;
    apply(&mut cluster, "web", 2)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    let mut leader = wait_leader(&mut cluster, &[1, 2, 3])?;
    if leader == 3 {
        // Elections are randomized: when the witness won, pause it until a worker leads,
        // then resume it (PreVote keeps the returning witness from disrupting that term).
        cluster.node(3).signal(libc::SIGSTOP)?;
        let deadline = Instant::now() + CONVERGE;
        leader = loop {
            let l = wait_leader(&mut cluster, &[1, 2])?;
            if l != 3 {
                break l;
            }
            ensure!(
                Instant::now() < deadline,
                "no worker took over from the paused witness"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        cluster.node(3).signal(libc::SIGCONT)?;
        eprintln!("    the witness led; paused it until worker-{leader} took over");
        wait_all_alive(&mut cluster, &[1, 2, 3])?;
        ensure!(
            wait_leader(&mut cluster, &[1, 2, 3])? == leader,
            "leadership moved again when the witness returned"
        );
        wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    }
    let (survivor, survivor_name) = if leader == 1 {
        (2, "worker-2")
    } else {
        (1, "worker-1")
    };
    cluster.node(leader).signal(libc::SIGKILL)?;
    // The survivors name the dead leader until their election timeout fires.
    let deadline = Instant::now() + CONVERGE;
    while wait_leader(&mut cluster, &[survivor, 3])? == leader {
        ensure!(
            Instant::now() < deadline,
            "no new leader after killing node {leader}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_running(
        &mut cluster,
        survivor,
        "web",
        &[survivor_name, survivor_name],
    )
}

/// Kill the witness: quorum holds (2 of 3), nothing moves.
pub fn kill_witness(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-kill-witness", 24)?;
    apply(&mut cluster, "web", 2)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    cluster.node(3).signal(libc::SIGKILL)?;
    std::thread::sleep(Duration::from_secs(3));
    wait_leader(&mut cluster, &[1, 2])?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    let status = cluster.node(1).command("xylem status", CMD)?;
    ensure!(
        status.contains("Healthy") && !status.contains("NO QUORUM"),
        "after the witness died:\n{status}"
    );
    Ok(())
}

/// Isolate worker-2: it reports NO QUORUM and creates nothing; the majority keeps two
/// replicas; after heal exactly two run.
pub fn isolate_worker(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-isolate", 25)?;
    apply(&mut cluster, "web", 2)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    cluster.nemesis().partition(&[&[1, 3], &[2]]);
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"])?;
    let deadline = Instant::now() + CONVERGE;
    loop {
        let status = cluster.node(2).command("xylem status", CMD)?;
        if status.contains("NO QUORUM") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "isolated worker-2 never said NO QUORUM:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let refused = cluster.node(2).command("xylem scale web 3", CMD)?;
    ensure!(
        refused.starts_with("error:") && refused.contains("no quorum"),
        "the minority accepted a write: {refused:?}"
    );
    cluster.nemesis().heal();
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"])?;
    wait_running(&mut cluster, 2, "web", &["worker-1", "worker-1"])
}

/// Scale up spreads over the workers; scale down removes replicas.
pub fn scale(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-scale", 26)?;
    apply(&mut cluster, "web", 2)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    let out = cluster.node(2).command("xylem scale web 4", CMD)?;
    ensure!(committed(&out), "scale up printed {out:?}");
    wait_running(
        &mut cluster,
        1,
        "web",
        &["worker-1", "worker-1", "worker-2", "worker-2"],
    )?;
    let out = cluster.node(1).command("xylem scale web 1", CMD)?;
    ensure!(committed(&out), "scale down printed {out:?}");
    wait_count(&mut cluster, 1, "web", 1)?;
    let out = cluster.node(1).command("xylem delete web", CMD)?;
    ensure!(committed(&out), "delete printed {out:?}");
    wait_count(&mut cluster, 1, "web", 0)?;
    Ok(())
}

/// Bad `xylem` commands print one clear error each and commit nothing.
pub fn bad_commands(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = start(env, "xylem-bad", 28)?;
    apply(&mut cluster, "web", 1)?;
    wait_count(&mut cluster, 1, "web", 1)?;
    let mark = cluster.node(1).guest_now_us()?;
    for (line, want) in [
        ("xylem apply api --payload nosuch", "unknown payload"),
        ("xylem apply Bad_Name --payload hello", "service name has"),
        ("xylem apply api --payload hello --replicas 500", "replicas"),
        ("xylem apply api --replicas 2", "--payload is required"),
        (
            "xylem apply api --payload hello --restart sometimes",
            "restart policy 'sometimes'",
        ),
        (
            "xylem apply api --payload hello --memory-mib 0",
            "memory limit 0 MiB is outside 1..=4096 MiB",
        ),
        (
            "xylem apply api --payload hello --memory-mib 5000",
            "memory limit 5000 MiB is outside",
        ),
        (
            "xylem apply api --payload hello --memory-mib lots",
            "'lots' is not a memory size in MiB",
        ),
        ("xylem scale nosuch 2", "rejected, nothing committed"),
        ("xylem scale web many", "'many' is not a replica count"),
        ("xylem delete nosuch", "rejected, nothing committed"),
        ("xylem frobnicate", "error: usage: xylem"),
    ] {
        let out = cluster.node(1).command(line, CMD)?;
        ensure!(
            out.starts_with("error:") && out.contains(want),
            "{line:?} printed {out:?}, expected an error mentioning {want:?}"
        );
    }
    // Placement may legitimately move a replica meanwhile; what must not appear is any
    // service-level change.
    std::thread::sleep(Duration::from_secs(1));
    let committed: Vec<_> = cluster
        .node(1)
        .events()
        .into_iter()
        .filter(|e| {
            e.t_us > mark
                && e.kind == "xylem_commit"
                && matches!(e.get("op"), Some("apply" | "scale" | "delete"))
        })
        .collect();
    ensure!(
        committed.is_empty(),
        "bad commands committed something: {committed:?}"
    );
    let status = cluster.node(1).command("xylem status", CMD)?;
    ensure!(
        status.lines().filter(|l| l.starts_with("web ")).count() == 1 && !status.contains("api"),
        "services changed:\n{status}"
    );
    memory_limit(&mut cluster)
}

/// A service applied with `--memory-mib 4` runs its cells under that limit: `memhog` maps
/// until `ENOMEM` somewhere below 4 MiB (image, stack and page tables count too), and the
/// node that runs it keeps answering. `xylem status` shows the limit.
fn memory_limit(cluster: &mut Cluster) -> Result<(), HarnessError> {
    let out = cluster.node(1).command(
        "xylem apply hog --payload memhog --args 256 600000 --memory-mib 4",
        CMD,
    )?;
    ensure!(committed(&out), "apply --memory-mib printed {out:?}");
    let node = wait_count(cluster, 1, "hog", 1)?.remove(0);
    let status = cluster.node(1).command("xylem status", CMD)?;
    ensure!(
        status.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.first() == Some(&"hog") && words.get(3) == Some(&"4")
        }),
        "no MEM_MIB 4 for hog:\n{status}"
    );
    let name = cell_table(&status)
        .into_iter()
        .find(|(name, _, _)| name.starts_with("hog/"))
        .map(|(name, _, _)| name)
        .ok_or_else(|| HarnessError::Check(format!("no hog cell:\n{status}")))?;
    let id: u64 = if node == "worker-1" { 1 } else { 2 };
    let deadline = Instant::now() + CONVERGE;
    let logs = loop {
        let logs = cluster
            .node(id)
            .command(&format!("cell logs {name} 20"), CMD)?;
        if logs.contains("memhog: holding") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mapped_kib: u64 = logs
        .split("mapped ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| HarnessError::Check(format!("no mapped figure from {name}: {logs}")))?;
    ensure!(
        logs.contains("then ENOMEM") && (2048..4096).contains(&mapped_kib),
        "a 4 MiB service cell mapped {mapped_kib} KiB: {logs}"
    );
    let up = cluster.node(id).command("uptime", CMD)?;
    ensure!(up.starts_with("up "), "{node} unresponsive: {up:?}");
    Ok(())
}

/// Five workers with three replicas lose two nodes: three replicas run on the survivors.
pub fn five_nodes(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = Cluster::start(env, "xylem-five", 5, 29)?;
    wait_all_alive(&mut cluster, &[1, 2, 3, 4, 5])?;
    // From here on every node is up: a node_down about a live one is false.
    let mut formed_us = [0u64; 6];
    for id in 1..=5u64 {
        formed_us[id as usize] = cluster.node(id).guest_now_us()?;
    }
    wait_leader(&mut cluster, &[1, 2, 3, 4, 5])?;
    apply(&mut cluster, "web", 3)?;
    wait_count(&mut cluster, 1, "web", 3)?;
    let leader = wait_leader(&mut cluster, &[1, 2, 3, 4, 5])?;
    let victims: Vec<u64> = [5, 4, 3, 2]
        .into_iter()
        .filter(|&id| id != leader)
        .take(2)
        .collect();
    for &v in &victims {
        cluster.node(v).signal(libc::SIGKILL)?;
    }
    let survivors: Vec<u64> = (1..=5).filter(|id| !victims.contains(id)).collect();
    let observer = survivors[0];
    let deadline = Instant::now() + CONVERGE;
    loop {
        let cells = running_cells(&mut cluster, observer, "web")?;
        let on_dead = cells
            .iter()
            .any(|n| victims.iter().any(|v| *n == format!("worker-{v}")));
        if cells.len() == 3 && !on_dead {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after losing {victims:?}: running on {cells:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Five TCG guests on two cores: a starved node must not have accused a live one, nor
    // been declared down itself (issue 12, part 3). Every node_down is about a victim.
    for &id in &survivors {
        let false_downs: Vec<String> = cluster
            .node(id)
            .events()
            .iter()
            .filter(|e| e.kind == "node_down" && e.t_us > formed_us[id as usize])
            .filter_map(|e| e.get("peer").map(str::to_string))
            .filter(|peer| !victims.iter().any(|v| v.to_string() == *peer))
            .collect();
        ensure!(
            false_downs.is_empty(),
            "node {id} declared live node(s) {false_downs:?} down"
        );
    }
    Ok(())
}
