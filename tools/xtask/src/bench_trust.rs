//! `cargo xtask bench trust`: what node authentication costs (issue #15), every figure taken
//! in the same run with and without it (`Trust::Sealed` against `Trust::Off`, the
//! unauthenticated build selected by the node config `trust=off`):
//!
//! - `tls_handshake_ms`: one pair under TCG, TCP established to keys installed on the
//!   dialler, median over the first session and [`HANDSHAKE_RESTARTS`] re-handshakes after
//!   restarting the acceptor;
//! - `transport_rtt_us` sealed and plain: median of 1000 `netbench` probe round trips on two
//!   nodes, and their ratio;
//! - `failover_ms` sealed and plain: SIGKILL of worker-2 to the replacement cell running on
//!   worker-1, median of [`FAILOVERS`] each (a fresh cluster each time), alternating the two
//!   builds, and their ratio.
//!
//! The host load average is printed beside the figures: under other builds' load every
//! figure swings, the ratios less than the absolute values.

use std::time::Duration;

use qemu_tests::cluster::{Cluster, Trust};
use qemu_tests::scenarios::control::{self, measure_failover, wait_leader};
use qemu_tests::scenarios::membership::wait_all_alive;
use qemu_tests::scenarios::trust::{trust_view, wait_sessions};
use qemu_tests::HarnessError;

use crate::bench::median;
use crate::{image, setup};

const PROBES: u32 = 1000;
const HANDSHAKE_RESTARTS: usize = 4;
const FAILOVERS: usize = 3;

fn err(e: HarnessError) -> String {
    e.to_string()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn rtt_p50(cluster: &mut Cluster) -> Result<u64, String> {
    let out = cluster
        .node(1)
        .command(
            &format!("netbench worker-2 {PROBES} 1000 3"),
            Duration::from_secs(300),
        )
        .map_err(err)?;
    eprintln!("    {}", out.trim().replace('\n', "\n    "));
    if !out.contains(&format!("answered {PROBES} ")) {
        return Err(format!("not every probe was answered: {out}"));
    }
    out.split("p50=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| format!("no p50 in netbench output: {out}"))
}

/// Two nodes: handshakes (sealed only) and probe round trips.
fn pair(env: &qemu_tests::Env, trust: Trust) -> Result<(u64, Option<u64>), String> {
    let name = match trust {
        Trust::Sealed => "pair-sealed",
        Trust::Off => "pair-plain",
    };
    let mut cluster = Cluster::start_with(env, name, 2, 7, trust).map_err(err)?;
    let mut handshake = None;
    if trust == Trust::Sealed {
        wait_sessions(&mut cluster, &[1, 2]).map_err(err)?;
        for _ in 0..HANDSHAKE_RESTARTS {
            let before = trust_view(&mut cluster, 1)
                .map_err(err)?
                .keys
                .get(&2)
                .cloned();
            cluster.node(2).signal(libc::SIGKILL).map_err(err)?;
            cluster.restart(2).map_err(err)?;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let now = trust_view(&mut cluster, 1)
                    .map_err(err)?
                    .keys
                    .get(&2)
                    .cloned();
                if now.is_some() && now != before {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err("worker-1 never re-keyed with the restarted worker-2".into());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let view = trust_view(&mut cluster, 1).map_err(err)?;
        eprintln!("    {}", view.text.trim().replace('\n', "\n    "));
        handshake = view.counts.get("tls_handshake_ms.median").copied();
    }
    let rtt = rtt_p50(&mut cluster)?;
    Ok((rtt, handshake))
}

fn failover_cluster(env: &qemu_tests::Env, trust: Trust) -> Result<Cluster, String> {
    let name = match trust {
        Trust::Sealed => "failover-sealed",
        Trust::Off => "failover-plain",
    };
    let mut cluster = Cluster::start_with(env, name, 3, 21, trust).map_err(err)?;
    if trust == Trust::Sealed {
        wait_sessions(&mut cluster, &[1, 2, 3]).map_err(err)?;
    }
    wait_all_alive(&mut cluster, &[1, 2, 3]).map_err(err)?;
    wait_leader(&mut cluster, &[1, 2, 3]).map_err(err)?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(cluster)
}

/// One failover on a fresh cluster of `trust`: SIGKILL worker-2 while `web` runs on both
/// workers, until worker-1 runs the replacement.
fn one_failover(env: &qemu_tests::Env, i: usize, trust: Trust) -> Result<f64, String> {
    let mut cluster = failover_cluster(env, trust)?;
    control::apply(&mut cluster, "web", 2).map_err(err)?;
    control::wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"]).map_err(err)?;
    let f = measure_failover(&mut cluster, libc::SIGKILL, "web").map_err(err)?;
    eprintln!(
        "    {trust:?} kill {i}: node_down {:.0} ms, commit {:.0} ms, running {:.0} ms (load {})",
        f.node_down_ms,
        f.assign_committed_ms,
        f.cell_running_ms,
        load()
    );
    Ok(f.cell_running_ms)
}

/// `cargo xtask bench trust`.
pub fn trust() -> Result<(), String> {
    setup::ensure_qemu()?;
    let env = image::test_env(false, "bench-trust")?;
    eprintln!("==> two nodes, sealed (load {})", load());
    let (rtt_sealed, handshake) = pair(&env, Trust::Sealed)?;
    eprintln!("==> two nodes, plain (load {})", load());
    let (rtt_plain, _) = pair(&env, Trust::Off)?;
    // One cluster at a time (six TCG guests on two cores would measure the host), the two
    // builds alternating so slow phases of the host's load hit both alike.
    let mut failover: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..FAILOVERS {
        failover[0].push(one_failover(&env, i, Trust::Sealed)?);
        failover[1].push(one_failover(&env, i, Trust::Off)?);
    }
    let (f_sealed, f_plain) = (median(&mut failover[0]), median(&mut failover[1]));
    println!("host load average: {}", load());
    if let Some(ms) = handshake {
        println!("METRIC tls_handshake_ms {ms} ms");
    }
    println!("METRIC transport_rtt_us {rtt_sealed} us (sealed)");
    println!("METRIC transport_rtt_plain_us {rtt_plain} us (unauthenticated)");
    println!(
        "METRIC transport_rtt_ratio {:.2} (sealed / plain)",
        rtt_sealed as f64 / rtt_plain.max(1) as f64
    );
    println!("METRIC failover_ms {f_sealed:.0} ms (sealed)");
    println!("METRIC failover_plain_ms {f_plain:.0} ms (unauthenticated)");
    println!(
        "METRIC failover_ratio {:.2} (sealed / plain; the issue asks <= 1.10)",
        f_sealed / f_plain.max(1.0)
    );
    Ok(())
}
