//! Cluster benchmarks: failure detection in QEMU, and the host simulators' figures.
//!
//! Timings use COM2 timestamps mapped to the host clock (`Node::clock_origin`), so a
//! figure runs from the harness's signal to the first survivor's `node_down` line.

use std::time::{Duration, Instant};

use qemu_tests::cluster::Cluster;
use qemu_tests::scenarios::membership::wait_all_alive;

use crate::bench::median;
use crate::image::{self, cargo};
use crate::setup;

const SAMPLES: usize = 5;
const VICTIM: u64 = 2;
const OBSERVERS: [u64; 2] = [1, 3];

/// `cargo xtask bench failure-detect [--idle-minutes N] [--no-hog]`.
pub fn failure_detect(idle_minutes: u64, hog: bool) -> Result<(), String> {
    setup::ensure_qemu()?;
    let env = image::test_env(false, "bench-failure-detect")?;
    // Bounded: the samples take a few minutes at most, the idle run its minutes.
    let _hog = if hog {
        Some(CpuHog::start(Duration::from_secs(600 + idle_minutes * 60))?)
    } else {
        None
    };
    let mut cluster = Cluster::start(&env, "detect", 3, 7).map_err(|e| e.to_string())?;
    wait_all_alive(&mut cluster, &[1, 2, 3]).map_err(|e| e.to_string())?;
    let mut kill_ms = Vec::new();
    let mut hang_ms = Vec::new();
    for i in 0..SAMPLES {
        let ms = detect_once(&mut cluster, libc::SIGKILL)?;
        eprintln!("    kill {i}: first node_down after {ms:.0} ms");
        kill_ms.push(ms);
        cluster.restart(VICTIM).map_err(|e| e.to_string())?;
        wait_all_alive(&mut cluster, &[1, 2, 3]).map_err(|e| e.to_string())?;
        let ms = detect_once(&mut cluster, libc::SIGSTOP)?;
        eprintln!("    hang {i}: first node_down after {ms:.0} ms");
        hang_ms.push(ms);
        cluster
            .node(VICTIM)
            .signal(libc::SIGCONT)
            .map_err(|e| e.to_string())?;
        wait_all_alive(&mut cluster, &[1, 2, 3]).map_err(|e| e.to_string())?;
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (kill_max, hang_max) = (max(&kill_ms), max(&hang_ms));
    println!("METRIC detect_kill_ms {:.0} ms", median(&mut kill_ms));
    println!("METRIC detect_kill_ms_max {kill_max:.0} ms");
    println!("METRIC detect_hang_ms {:.0} ms", median(&mut hang_ms));
    println!("METRIC detect_hang_ms_max {hang_max:.0} ms");
    if idle_minutes > 0 {
        let (false_downs, self_suspects) = idle_run(&mut cluster, idle_minutes)?;
        println!("METRIC false_node_down_{idle_minutes}min {false_downs} count");
        println!("METRIC self_suspect_{idle_minutes}min {self_suspects} count");
    }
    Ok(())
}

/// A host CPU hog: one busy loop per host core, each bounded by `timeout(1)`, started and
/// (on drop) killed by PID, so the guests compete for the CPU like on a loaded machine.
struct CpuHog {
    children: Vec<std::process::Child>,
}

impl CpuHog {
    fn start(bound: Duration) -> Result<Self, String> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut children = Vec::with_capacity(cores);
        for _ in 0..cores {
            let child = std::process::Command::new("timeout")
                .arg(bound.as_secs().to_string())
                .args(["sh", "-c", "while :; do :; done"])
                .spawn()
                .map_err(|e| format!("starting the CPU hog: {e}"))?;
            children.push(child);
        }
        let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
        eprintln!(
            "    CPU hog: {cores} busy loops (`while :; do :; done`, at most {} s), PIDs {pids:?}",
            bound.as_secs()
        );
        Ok(Self { children })
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SIGTERM by PID (kill(1): no unsafe here); timeout(1) passes it to its loop.
            let _ = std::process::Command::new("kill")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

/// Injects `signal` into the victim; returns ms until the first survivor logs node_down.
fn detect_once(cluster: &mut Cluster, signal: i32) -> Result<f64, String> {
    let mut origins = Vec::new();
    for id in OBSERVERS {
        let node = cluster.node(id);
        let origin = node.clock_origin().map_err(|e| e.to_string())?;
        let mark = node.guest_now_us().map_err(|e| e.to_string())?;
        origins.push((id, origin, mark));
    }
    let injected = Instant::now();
    cluster
        .node(VICTIM)
        .signal(signal)
        .map_err(|e| e.to_string())?;
    let deadline = injected + Duration::from_secs(20);
    loop {
        let mut first: Option<Instant> = None;
        for &(id, origin, mark) in &origins {
            let down = cluster.node(id).events().into_iter().find(|e| {
                e.kind == "node_down" && e.get("peer") == Some(&VICTIM.to_string()) && e.t_us > mark
            });
            if let Some(e) = down {
                let at = origin + Duration::from_micros(e.t_us);
                first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
        if let Some(at) = first {
            return Ok(at.saturating_duration_since(injected).as_secs_f64() * 1000.0);
        }
        if Instant::now() > deadline {
            return Err("no survivor declared the victim down within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the cluster idle for `minutes`; counts node_down events (all false: nothing
/// failed) and self_suspect events (a node noticed it ran late and held its verdicts).
fn idle_run(cluster: &mut Cluster, minutes: u64) -> Result<(usize, usize), String> {
    let marks: Vec<(u64, u64)> = [1, 2, 3]
        .into_iter()
        .map(|id| {
            cluster
                .node(id)
                .guest_now_us()
                .map(|m| (id, m))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    eprintln!("    idle run: {minutes} min, 3 nodes, counting node_down events");
    std::thread::sleep(Duration::from_secs(minutes * 60));
    let mut count = |kind: &str| -> usize {
        marks
            .iter()
            .map(|&(id, mark)| {
                cluster
                    .node(id)
                    .events()
                    .iter()
                    .filter(|e| e.kind == kind && e.t_us > mark)
                    .count()
            })
            .sum()
    };
    Ok((count("node_down"), count("self_suspect")))
}

/// Runs a simulator crate's `bench` mode and passes its METRIC lines through.
pub fn simulator(package: &str) -> Result<(), String> {
    eprintln!("==> {package}: cargo run --release -p {package} -- bench");
    let output: std::process::Output = cargo()
        .current_dir(crate::root())
        .args(["run", "--quiet", "--release", "-p", package, "--", "bench"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {package}: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let metrics: Vec<&str> = text.lines().filter(|l| l.starts_with("METRIC ")).collect();
    if !output.status.success() || metrics.is_empty() {
        return Err(format!("{package} bench failed ({})", output.status));
    }
    for line in metrics {
        println!("{line}");
    }
    Ok(())
}

/// `cargo xtask bench failover [--kills N] [--hangs N]`: harness signal → replacement cell
/// running on the survivor, for `kills` SIGKILLs (median, max, and the first kill after
/// boot) and `hangs` SIGSTOPs, and the survivor's median reconcile pass.
pub fn failover(kills: usize, hangs: usize) -> Result<(), String> {
    use qemu_tests::scenarios::control::{self, measure_failover};
    if kills == 0 {
        return Err("--kills must be at least 1".into());
    }
    setup::ensure_qemu()?;
    let env = image::test_env(false, "bench-failover")?;
    let e = |err: qemu_tests::HarnessError| err.to_string();
    let mut cluster = control::start(&env, "failover", 3).map_err(e)?;
    let (mut kill_ms, mut hang_ms, mut detect_ms) = (Vec::new(), Vec::new(), Vec::new());
    // Kills first (the first after boot is the one that used to be slowest), then hangs.
    for i in 0..kills + hangs {
        let service = format!("web{i}");
        if i > 0 {
            let out = cluster
                .node(1)
                .command(
                    &format!("xylem delete web{}", i - 1),
                    Duration::from_secs(10),
                )
                .map_err(e)?;
            if !control::committed(&out) {
                return Err(format!("delete web{}: {out}", i - 1));
            }
            control::wait_count(&mut cluster, 1, &format!("web{}", i - 1), 0).map_err(e)?;
        }
        control::apply(&mut cluster, &service, 2).map_err(e)?;
        control::wait_running(&mut cluster, 1, &service, &["worker-1", "worker-2"]).map_err(e)?;
        let hang = i >= kills;
        let f = measure_failover(
            &mut cluster,
            if hang { libc::SIGSTOP } else { libc::SIGKILL },
            &service,
        )
        .map_err(e)?;
        eprintln!(
            "    {} {}: node_down {:.0} ms, commit {:.0} ms, running {:.0} ms",
            if hang { "hang" } else { "kill" },
            if hang { i - kills } else { i },
            f.node_down_ms,
            f.assign_committed_ms,
            f.cell_running_ms
        );
        if hang {
            hang_ms.push(f.cell_running_ms);
            cluster.node(2).signal(libc::SIGCONT).map_err(e)?;
        } else {
            kill_ms.push(f.cell_running_ms);
            detect_ms.push(f.node_down_ms);
            cluster.restart(2).map_err(e)?;
        }
        wait_all_alive(&mut cluster, &[1, 2, 3]).map_err(e)?;
    }
    let first = kill_ms[0];
    let worst = kill_ms.iter().copied().fold(0.0, f64::max);
    eprintln!("    {kills} kills: median and max below");
    println!("METRIC failover_ms {:.0} ms", median(&mut kill_ms));
    println!("METRIC failover_ms_max {worst:.0} ms");
    println!("METRIC failover_first_kill_ms {first:.0} ms");
    println!("METRIC failover_detect_ms {:.0} ms", median(&mut detect_ms));
    if !hang_ms.is_empty() {
        println!("METRIC failover_hang_ms {:.0} ms", median(&mut hang_ms));
    }
    let stats = cluster
        .node(1)
        .command("xylem stats", Duration::from_secs(10))
        .map_err(e)?;
    if let Some(us) = stats
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
    {
        println!("METRIC reconcile_us {us} us");
    }
    Ok(())
}

/// `cargo xtask bench operate`: the three operate scenarios, which print `drain_ms`,
/// `rollout_ms` and `scale_out_ms` (each on a fresh three-node cluster).
pub fn operate() -> Result<(), String> {
    use qemu_tests::scenarios::operate;
    setup::ensure_qemu()?;
    let env = image::test_env(false, "bench-operate")?;
    let e = |err: qemu_tests::HarnessError| err.to_string();
    operate::drain(&env).map_err(e)?;
    operate::rollout(&env).map_err(e)?;
    operate::autoscale(&env).map_err(e)?;
    Ok(())
}
