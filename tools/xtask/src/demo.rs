//! `cargo xtask demo`: the thesis in one run. Two workers and a witness boot on the fabric;
//! a service at replicas=2 gets one cell on each worker; worker-2's QEMU is SIGKILLed; the
//! survivor's kernel observes node_down, the Raft group commits the new assignment, and the
//! replacement cell runs. Then worker-2 comes back and the cluster stays at exactly 2.
//! Last, the run's timeline (`cargo xtask timeline`) is written and its path printed.

use std::time::Duration;

use qemu_tests::cluster::Cluster;
use qemu_tests::scenarios::control::{self, measure_failover};
use qemu_tests::scenarios::membership::wait_all_alive;

use crate::image;
use crate::setup;

const CMD: Duration = Duration::from_secs(10);

/// Runs the demo; fails (non-zero exit) if the failover does not happen. Either way the
/// run's timeline is written once the cluster is down (its last clock readings are taken
/// as it shuts down).
pub fn cmd_demo() -> Result<(), String> {
    setup::ensure_qemu()?;
    let env = image::test_env(false, "demo")?;
    let result = run(&env);
    let dir = env.run_dir.join("demo");
    match timeline::write_html(&dir) {
        Ok((page, tl)) => {
            println!("\n==> timeline of this run: {}", page.display());
            for f in &tl.failovers {
                println!(
                    "    {}/{}: {} -> {} failover {:.1} ms",
                    f.service,
                    f.slot,
                    f.from_node,
                    f.to_node,
                    f.ms()
                );
            }
        }
        Err(why) => println!("\n(no timeline: {why})"),
    }
    result
}

fn run(env: &qemu_tests::Env) -> Result<(), String> {
    let e = |err: qemu_tests::HarnessError| err.to_string();
    println!("==> booting worker-1, worker-2 and witness (64 MiB each, TCG) on the virtual switch");
    let mut cluster = control::start(env, "demo", 1).map_err(e)?;
    let leader = control::wait_leader(&mut cluster, &[1, 2, 3]).map_err(e)?;
    println!("    membership converged; Raft leader: node {leader}");
    println!("\n==> xylem apply web --payload hello --replicas 2   (on worker-1)");
    control::apply(&mut cluster, "web", 2).map_err(e)?;
    control::wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"]).map_err(e)?;
    show(&mut cluster, 1, "xylem status")?;

    println!(
        "\n==> SIGKILL worker-2 (QEMU pid {})",
        cluster.node(2).pid()
    );
    let f = measure_failover(&mut cluster, libc::SIGKILL, "web").map_err(e)?;
    println!("    what worker-1's kernel saw (ms after the kill, from its COM2 event log):");
    println!(
        "    {:>7.0} ms  node_down peer=worker-2        (SWIM verdict, a kernel event)",
        f.node_down_ms
    );
    println!(
        "    {:>7.0} ms  xylem_commit assign web/1 -> worker-1   (Raft committed the move)",
        f.assign_committed_ms
    );
    println!(
        "    {:>7.0} ms  cell_start web/1 on worker-1   (replacement running in ring 3)",
        f.cell_running_ms
    );
    control::wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"]).map_err(e)?;
    show(&mut cluster, 1, "xylem status")?;
    let mem = cluster.node(1).command("mem", CMD).map_err(e)?;

    println!("\n==> restarting worker-2: it rejoins, runs nothing stale, the cluster stays at 2");
    cluster.restart(2).map_err(e)?;
    wait_all_alive(&mut cluster, &[1, 2, 3]).map_err(e)?;
    control::wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"]).map_err(e)?;
    show(&mut cluster, 2, "xylem status")?;

    println!("\nMETRIC failover_ms {:.0} ms", f.cell_running_ms);
    // `mem` prints "frames: … used N (K KiB)" and "heap:   used K KiB of …".
    let frames_line = mem.lines().find(|l| l.starts_with("frames:")).unwrap_or("");
    let heap_line = mem.lines().find(|l| l.starts_with("heap:")).unwrap_or("");
    if let Some(kib) = first_number(heap_line.split("used ").nth(1).unwrap_or("")) {
        println!("METRIC node_heap_kib {kib} KiB");
    }
    if let Some(kib) = first_number(
        frames_line
            .split("used ")
            .nth(1)
            .and_then(|s| s.split('(').nth(1))
            .unwrap_or(""),
    ) {
        println!("METRIC node_frames_used_kib {kib} KiB");
    }
    Ok(())
}

fn show(cluster: &mut Cluster, id: u64, line: &str) -> Result<(), String> {
    let out = cluster
        .node(id)
        .command(line, CMD)
        .map_err(|e| e.to_string())?;
    println!("{}{line}\n{}", cluster.node(id).prompt(), out.trim_end());
    Ok(())
}

/// The first run of digits in `text`.
fn first_number(text: &str) -> Option<u64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
