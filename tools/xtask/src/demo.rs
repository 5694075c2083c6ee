//! `cargo xtask demo`: the thesis in one run. Two workers and a witness boot on the fabric;
//! a service `web` (the `http` payload, port 80) at replicas=2 gets one cell on each worker
//! and a stable address that the host reaches through the gateway; a client on the host
//! fetches `GET /` every 20 ms; worker-2's QEMU is SIGKILLed; the survivor's kernel
//! observes node_down, the Raft group commits the new assignment, and the replacement cell
//! runs, while the client keeps getting answers. Then worker-2 comes back and the cluster
//! stays at exactly 2.
//! Last, the run's timeline (`cargo xtask timeline`) is written and its path printed.

use std::time::Duration;

use qemu_tests::cluster::Cluster;
use qemu_tests::scenarios::control::{self, measure_failover};
use qemu_tests::scenarios::frontdoor::{self, Prober, Sample};
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
    println!("==> xylem apply web --payload http --replicas 2 --port 80   (on worker-1)");
    let mut rig = frontdoor::start(env, "demo", 1).map_err(e)?;
    let leader = control::wait_leader(&mut rig.cluster, &[1, 2, 3]).map_err(e)?;
    println!("    membership converged; Raft leader: node {leader}");
    let (owner, epoch) = rig.wait_owner(&[1, 2, 3], |o| o.is_some()).map_err(e)?;
    println!(
        "    web.xylem = {} (DNS on every node), answered by node {owner} at epoch {epoch}",
        frontdoor::WEB_VIP
    );
    println!(
        "    gateway: http://{}/ -> {}:80",
        rig.gateway.listen,
        frontdoor::WEB_VIP
    );
    show(&mut rig.cluster, 1, "xylem status")?;
    show(&mut rig.cluster, owner, "frontdoor")?;

    // A first few requests warm the gateway's path to the address (its cold first
    // connections fail in a burst about 1 s in: that would be just when the kill comes).
    for _ in 0..5 {
        rig.get()?;
    }
    println!("\n==> a client on the host: GET / through the gateway every 20 ms");
    let prober = Prober::start(rig.gateway.listen);
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "==> SIGKILL worker-2 (QEMU pid {})",
        rig.cluster.node(2).pid()
    );
    let killed_at = std::time::Instant::now();
    let f = measure_failover(&mut rig.cluster, libc::SIGKILL, "web").map_err(e)?;
    std::thread::sleep(Duration::from_secs(2));
    let samples = prober.finish();
    let v = frontdoor::verdict(&samples);
    print_client(&samples, killed_at);
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
    let cluster = &mut rig.cluster;
    control::wait_running(cluster, 1, "web", &["worker-1", "worker-1"]).map_err(e)?;
    show(cluster, 1, "xylem status")?;
    let mem = cluster.node(1).command("mem", CMD).map_err(e)?;

    println!("\n==> restarting worker-2: it rejoins, runs nothing stale, the cluster stays at 2");
    cluster.restart(2).map_err(e)?;
    wait_all_alive(cluster, &[1, 2, 3]).map_err(e)?;
    control::wait_running(cluster, 1, "web", &["worker-1", "worker-1"]).map_err(e)?;
    show(cluster, 2, "xylem status")?;
    println!("    through the gateway after the rejoin: {:?}", rig.get());

    println!("\nMETRIC failover_ms {:.0} ms", f.cell_running_ms);
    println!("METRIC client_outage_ms {:.0} ms", v.outage_ms);
    println!("METRIC client_failed_requests {} count", v.failed);
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

/// The client's answers: a few before the kill, every one around it, a few after.
fn print_client(samples: &[Sample], killed_at: std::time::Instant) {
    let ms = |s: &Sample| {
        if s.started >= killed_at {
            s.started.duration_since(killed_at).as_secs_f64() * 1000.0
        } else {
            -(killed_at.duration_since(s.started).as_secs_f64() * 1000.0)
        }
    };
    let line = |s: &Sample| {
        let what = match &s.outcome {
            Ok(node) => format!("200 node={node}"),
            Err(e) => format!("FAILED {e}"),
        };
        let conn = if s.keepalive {
            "keep-alive"
        } else {
            "new conn"
        };
        println!(
            "    {:>+7.0} ms  {conn:<10}  {what}  ({:.0} ms)",
            ms(s),
            s.done.duration_since(s.started).as_secs_f64() * 1000.0
        );
    };
    let mut by_start: Vec<&Sample> = samples.iter().collect();
    by_start.sort_by_key(|s| s.started);
    println!("    client (ms from the kill; answers fetched through the gateway):");
    let before: Vec<_> = by_start.iter().filter(|s| ms(s) < -100.0).collect();
    for s in before.iter().rev().take(3).rev() {
        line(s);
    }
    println!("    ...");
    for s in by_start
        .iter()
        .filter(|s| (-100.0..1500.0).contains(&ms(s)))
    {
        if s.outcome.is_err() || (ms(s) as u64) % 200 < 20 {
            line(s);
        }
    }
    println!("    ...");
    for s in by_start.iter().rev().take(3).rev() {
        line(s);
    }
    let v = frontdoor::verdict(samples);
    println!(
        "    {} answers, {} failed; longest gap between two answers {:.0} ms",
        v.ok, v.failed, v.outage_ms
    );
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
