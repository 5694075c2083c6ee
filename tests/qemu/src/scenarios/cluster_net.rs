//! The cluster fabric inside the kernel (issue F4), on three nodes: ping mesh, partition
//! and heal, transport delivery under 20 % loss, and a garbage flood.
//!
//! Every scenario boots `worker-1`, `worker-2` and `witness` on a fresh seeded fabric and
//! talks to them through their consoles (`ping`, `netbench`, `net`).

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::fabric::{Link, Target};
use crate::node::Node;
use crate::{ensure, Env, HarnessError};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
const NODES: usize = 3;

/// A number after `key` in `text` (`key` includes the separator, e.g. `"received "`).
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Runs `ping <target> <count>` and returns (received, output).
fn ping(node: &mut Node, target: &str, count: u32) -> Result<(u64, String), HarnessError> {
    let timeout = COMMAND_TIMEOUT + Duration::from_secs(u64::from(count));
    let out = node.command(&format!("ping {target} {count}"), timeout)?;
    let received = number_after(&out, "transmitted, ")
        .ok_or_else(|| HarnessError::Check(format!("ping {target}: no summary in {out:?}")))?;
    Ok((received, out))
}

/// Every node pings every other by name; the error cases of `ping` are checked once.
pub fn ping_mesh(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = Cluster::start(env, "ping-mesh", NODES, 41)?;
    let members = cluster.members();
    for (from, from_name) in &members {
        for (to, to_name) in &members {
            if from == to {
                continue;
            }
            let (received, out) = ping(cluster.node(*from), to_name, 3)?;
            ensure!(
                received == 3,
                "{from_name} -> {to_name}: {received}/3 replies: {out:?}"
            );
            ensure!(
                out.contains(&format!("from 169.254.77.{to}: seq=0 rtt_us=")),
                "{from_name} -> {to_name}: per-reply line missing: {out:?}"
            );
        }
    }
    let n1 = cluster.node(1);
    let (received, _) = ping(n1, "169.254.77.2", 1)?;
    ensure!(received == 1, "ping by address failed");
    let cases = [
        (
            "ping nosuch",
            "error: ping: unknown node 'nosuch' (peers: worker-1, worker-2, witness)",
        ),
        (
            "ping 10.0.0.1",
            "error: ping: 10.0.0.1 is not a node address on the fabric (169.254.77.1-254)",
        ),
        (
            "ping 169.254.77.999",
            "error: ping: '169.254.77.999' is not an IPv4 address",
        ),
        (
            "ping worker-2 0",
            "error: ping: '0' is not a count (1-1000)",
        ),
        (
            "ping worker-2 many",
            "error: ping: 'many' is not a count (1-1000)",
        ),
        ("ping", "error: usage: ping <node|ip> [count 1-1000]"),
    ];
    for (line, expected) in cases {
        let out = n1.command(line, COMMAND_TIMEOUT)?;
        // Line-wise: another subsystem's log line may share the output.
        ensure!(
            out.lines().any(|l| l == expected),
            "{line}: got {out:?}, expected {expected:?}"
        );
    }
    let net = n1.command("net", COMMAND_TIMEOUT)?;
    ensure!(
        net.contains("mac 52:54:00:00:00:01")
            && net.contains("ip 169.254.77.1/24")
            && net.contains("link up"),
        "net output: {net:?}"
    );
    ensure!(
        number_after(&net, "frames: rx ").unwrap_or(0) > 0,
        "no frames received: {net:?}"
    );
    Ok(())
}

/// A partition stops delivery (ICMP and transport) across it; heal restores it.
pub fn partition_heal(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = Cluster::start(env, "partition", NODES, 42)?;
    let nemesis = cluster.nemesis();
    let (received, _) = ping(cluster.node(1), "witness", 2)?;
    ensure!(
        received == 2,
        "before the partition worker-1 cannot reach witness"
    );
    nemesis.partition(&[&[1, 2], &[3]]);
    let (received, out) = ping(cluster.node(1), "witness", 2)?;
    ensure!(received == 0, "ping crossed the partition: {out:?}");
    let (received, out) = ping(cluster.node(1), "worker-2", 2)?;
    ensure!(
        received == 2,
        "ping inside the majority side failed: {out:?}"
    );
    let bench = cluster
        .node(3)
        .command("netbench worker-1 3 200 1", COMMAND_TIMEOUT)?;
    ensure!(
        bench.contains("answered 0 given_up 3"),
        "transport crossed the partition: {bench:?}"
    );
    nemesis.heal();
    let (received, out) = ping(cluster.node(1), "witness", 3)?;
    ensure!(received == 3, "after heal worker-1 -> witness: {out:?}");
    let bench = cluster
        .node(3)
        .command("netbench worker-1 5 500 3", COMMAND_TIMEOUT)?;
    ensure!(
        bench.contains("answered 5 given_up 0"),
        "transport after heal: {bench:?}"
    );
    Ok(())
}

/// With 20 % loss on every link, transport probes re-sent after a timeout all get through.
pub fn lossy_links(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = Cluster::start(env, "lossy", NODES, 43)?;
    // Warm the ARP caches first, so the loss applies to the transport alone.
    for (from, to) in [(1, "worker-2"), (2, "witness"), (3, "worker-1")] {
        let (received, _) = ping(cluster.node(from), to, 1)?;
        ensure!(received == 1, "warm-up ping {from} -> {to} failed");
    }
    cluster.nemesis().set_loss_pct(Link::All, 20.0);
    let mut total_retries = 0;
    for (from, to) in [(1, "worker-2"), (2, "witness"), (3, "worker-1")] {
        let out = cluster
            .node(from)
            .command(&format!("netbench {to} 40 150 12"), Duration::from_secs(60))?;
        ensure!(
            out.contains("answered 40 given_up 0"),
            "node {from} -> {to} under 20 % loss: {out:?}"
        );
        total_retries += number_after(&out, "retries ").unwrap_or(0);
    }
    ensure!(
        total_retries > 0,
        "20 % loss caused no retries: the loss is not applied"
    );
    // Every answered probe was one envelope delivered each way; the drop counters stay
    // clean (loss removes frames, it does not corrupt them).
    let net = cluster.node(3).command("net", COMMAND_TIMEOUT)?;
    ensure!(
        net.contains("(total 0)"),
        "unexpected transport drops under plain loss: {net:?}"
    );
    eprintln!("    lossy: 3 x 40 probes answered with {total_retries} retries");
    Ok(())
}

/// Ten seconds of random frames at the fabric's full rate to every node: all stay
/// responsive (console) throughout, the garbage is counted as dropped, and afterwards the
/// transport works again.
pub fn garbage_flood(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = Cluster::start(env, "garbage", NODES, 44)?;
    let flood = Duration::from_secs(10);
    cluster
        .nemesis()
        .inject_garbage(Target::All, 100_000, flood);
    let started = Instant::now();
    let (mut checks, mut pings_ok) = (0, 0);
    while started.elapsed() < flood {
        for id in 1..=NODES as u64 {
            let up = cluster.node(id).command("uptime", COMMAND_TIMEOUT)?;
            ensure!(
                up.lines().any(|l| l.starts_with("up ")),
                "node {id} unresponsive during the flood: {up:?}"
            );
        }
        // The flood fills the fabric's per-node backlog, which drops real frames too; so a
        // ping during the flood may be lost in the switch. It is counted, not required.
        let (received, _) = ping(cluster.node(1), "worker-2", 1)?;
        pings_ok += received;
        checks += 1;
    }
    // Jobs still queued in the switch end now; give the per-node backlogs a moment to drain.
    cluster.nemesis().stop_garbage();
    std::thread::sleep(Duration::from_secs(1));
    let stats = cluster.fabric.stats();
    let mut dropped_total = 0;
    for id in 1..=NODES as u64 {
        let net = cluster.node(id).command("net", COMMAND_TIMEOUT)?;
        let dropped = number_after(&net, "rx_dropped ").unwrap_or(0);
        let injected = stats.port(id as u32).garbage_injected;
        ensure!(
            dropped > 100,
            "node {id}: only {dropped} frames counted as dropped ({injected} injected): {net:?}"
        );
        eprintln!("    garbage: node {id}: {injected} injected, {dropped} dropped by the filter");
        dropped_total += dropped;
    }
    for id in 1..=NODES as u64 {
        let bench = cluster.node(id).command(
            &format!(
                "netbench {} 5 500 3",
                if id == 1 { "worker-2" } else { "worker-1" }
            ),
            COMMAND_TIMEOUT,
        )?;
        ensure!(
            bench.contains("answered 5 given_up 0"),
            "node {id}: transport after the flood: {bench:?}"
        );
    }
    eprintln!("    garbage: {checks} responsiveness rounds ({pings_ok} pings answered during the flood), {dropped_total} frames dropped in total");
    Ok(())
}
