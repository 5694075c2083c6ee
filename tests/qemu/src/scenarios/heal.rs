//! Double failures heal. With `web` at 2 on worker-1, worker-2 and the witness, worker-2 and
//! the witness are SIGKILLed at the same instant: worker-1 is alone, without quorum, and
//! must keep its cell but create nothing. Then the dead come back one at a time — the
//! witness first or worker-2 first, from their own disks or from blank ones — and after
//! each return the majority must re-form: both sides see each other alive, one Raft leader
//! is agreed, `xylem status` says nothing of NO QUORUM, and `web` is back at 2.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::scenarios::control::{apply, start, wait_count, wait_leader, wait_running};
use crate::scenarios::membership::wait_all_alive;
use crate::{ensure, Env, HarnessError};

const CMD: Duration = Duration::from_secs(10);
/// How long the lone survivor waits (both peers declared down) before the first restart.
const ALONE: Duration = Duration::from_secs(4);
/// From a restart to the majority working again (boot, membership, election, commit).
const REFORM: Duration = Duration::from_secs(40);

/// How the dead nodes come back.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Restarted first, then second.
    order: [u64; 2],
    /// Whether the first node to return gets a blank disk (a replaced machine).
    first_blank: bool,
    /// Whether the second one does.
    second_blank: bool,
}

/// Kill worker-2 and the witness together; restart the witness first, on its disk.
pub fn witness_first(env: &Env) -> Result<(), HarnessError> {
    run(
        env,
        "heal-witness-first",
        61,
        Plan {
            order: [3, 2],
            first_blank: false,
            second_blank: false,
        },
    )
}

/// Kill worker-2 and the witness together; restart worker-2 first, on its disk.
pub fn worker_first(env: &Env) -> Result<(), HarnessError> {
    run(
        env,
        "heal-worker-first",
        62,
        Plan {
            order: [2, 3],
            first_blank: false,
            second_blank: false,
        },
    )
}

/// Kill worker-2 and the witness together; the witness returns on a blank disk.
pub fn blank_witness(env: &Env) -> Result<(), HarnessError> {
    run(
        env,
        "heal-blank-witness",
        63,
        Plan {
            order: [3, 2],
            first_blank: true,
            second_blank: false,
        },
    )
}

/// Kill worker-2 and the witness together; both return on blank disks, worker-2 first:
/// worker-1 alone holds the log and must lead the two newcomers.
pub fn blank_both(env: &Env) -> Result<(), HarnessError> {
    run(
        env,
        "heal-blank-both",
        64,
        Plan {
            order: [2, 3],
            first_blank: true,
            second_blank: true,
        },
    )
}

fn run(env: &Env, name: &str, seed: u64, plan: Plan) -> Result<(), HarnessError> {
    let mut cluster = start(env, name, seed)?;
    apply(&mut cluster, "web", 2)?;
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
    // The same instant: one signal right after the other, nothing in between.
    cluster.node(2).signal(libc::SIGKILL)?;
    cluster.node(3).signal(libc::SIGKILL)?;
    let killed = Instant::now();
    std::thread::sleep(ALONE);
    let alone = cluster.node(1).command("xylem status", CMD)?;
    ensure!(
        alone.contains("NO QUORUM"),
        "worker-1 alone still claims a quorum:\n{alone}"
    );
    let cells = cluster.node(1).command("cell ls", CMD)?;
    ensure!(
        cells.lines().filter(|l| l.contains("running")).count() == 1,
        "worker-1 without quorum must keep exactly its own cell:\n{cells}"
    );

    let [first, second] = plan.order;
    if plan.first_blank {
        cluster.wipe_disk(first)?;
    }
    cluster.restart(first)?;
    let reformed = wait_reformed(&mut cluster, &[1, first])?;
    eprintln!(
        "    node {first} back{}: majority {{1, {first}}} re-formed {:.1} s after its restart ({:.1} s after the kills)",
        if plan.first_blank { " on a blank disk" } else { "" },
        reformed.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    // Worker-1 hosts both replicas while worker-2 is away, whoever returned first.
    if first == 3 {
        wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"])?;
    } else {
        wait_count(&mut cluster, 1, "web", 2)?;
    }

    if plan.second_blank {
        cluster.wipe_disk(second)?;
    }
    cluster.restart(second)?;
    wait_reformed(&mut cluster, &[1, 2, 3])?;
    wait_count(&mut cluster, 1, "web", 2)?;
    wait_count(&mut cluster, second, "web", 2)?;
    Ok(())
}

/// Waits until `ids` see each other alive, agree on a leader, and `xylem status` on each
/// shows a quorum; returns how long that took.
fn wait_reformed(cluster: &mut Cluster, ids: &[u64]) -> Result<Duration, HarnessError> {
    let started = Instant::now();
    let deadline = started + REFORM;
    loop {
        let mut why = String::new();
        let healthy = ids.iter().all(|&id| {
            let members = cluster.node(id).command("members", CMD).unwrap_or_default();
            let status = cluster
                .node(id)
                .command("xylem status", CMD)
                .unwrap_or_default();
            let all_alive = ids.iter().all(|peer| {
                members.lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.first() == Some(&peer.to_string().as_str())
                        && cols.get(2) == Some(&"alive")
                })
            });
            let quorum = status.starts_with("quorum:") && !status.contains("NO QUORUM");
            if !(all_alive && quorum) {
                why = format!("node {id}:\n{members}\n{status}");
            }
            all_alive && quorum
        });
        if healthy {
            wait_all_alive(cluster, ids)?;
            wait_leader(cluster, ids)?;
            return Ok(started.elapsed());
        }
        if Instant::now() >= deadline {
            let mut nets = String::new();
            for &id in ids {
                let net = cluster.node(id).command("net", CMD).unwrap_or_default();
                nets.push_str(&format!("node {id} net:\n{net}\n"));
            }
            return Err(HarnessError::Check(format!(
                "{ids:?} did not re-form within {REFORM:?}; last seen on {why}\n{nets}{}",
                cluster.fabric.report()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
