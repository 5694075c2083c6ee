//! `cargo xtask bench …`: benchmarks that print `METRIC <name> <value> <unit>` lines.

use std::time::Duration;

use qemu_tests::node::Node;
use qemu_tests::qemu::NodeSpec;

use crate::image::{self, Profile};
use crate::setup;

const BOOT_SAMPLES: usize = 5;
/// Transport probes for `transport_rtt_us` (median of these).
const NET_PROBES: u32 = 1000;
/// ICMP echoes for `ping_rtt_us` (the first, which waits for ARP, is left out).
const NET_PINGS: u32 = 41;
/// `cargo xtask bench <name>`.
#[derive(clap::Subcommand)]
pub enum Bench {
    /// boot_to_prompt_ms (median of 5 boots).
    Boot,
    /// context_switch_ns, task_spawn_us (in-kernel).
    Sched,
    /// cell_spawn_us with its stage breakdown, cell_teardown_us (in-kernel).
    Cells,
    /// http_rps, http_p99_us: one `http` cell, a closed-loop client with 8 connections.
    Http {
        /// Keep-alive connections of the closed-loop client.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Seconds measured (after a 3 s warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// ping_rtt_us, transport_rtt_us (two nodes on the fabric).
    Net,
    /// detect_kill_ms, detect_hang_ms, false_node_down_Nmin (three nodes), with a CPU hog
    /// (one bounded busy loop per host core) running throughout unless --no-hog.
    FailureDetect {
        /// Also watch an idle cluster this long for false node_down verdicts.
        #[arg(long, value_name = "N", default_value_t = 0)]
        idle_minutes: u64,
        /// Run without the host CPU hog.
        #[arg(long)]
        no_hog: bool,
    },
    /// failover_ms (median) and failover_ms_max over 20 SIGKILLs, failover_hang_ms,
    /// reconcile_us (the demo's cluster).
    Failover {
        /// SIGKILLs of a worker measured.
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// SIGSTOPs of a worker measured.
        #[arg(long, default_value_t = 5)]
        hangs: usize,
    },
    /// The SWIM simulator's detection figures.
    MembershipSim,
    /// The Raft simulator's figures beside raft-rs.
    RaftSim,
    /// raft_commit_us, raft_failover_ms (3 voters, virtio-blk disks).
    Raft,
    /// client_outage_ms_{replica,owner}, client_failed_requests_{replica,owner}: a client
    /// through the gateway across SIGKILL of a non-owner replica node and of the owner.
    ServiceFailover {
        /// Runs of each case (the medians are printed).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// drain_ms (3 replicas off one worker), rollout_ms (3 replicas), scale_out_ms (load
    /// above target -> new replica running): the operate scenarios (docs/operations.md).
    Operate,
    /// tls_handshake_ms, transport_rtt_us and failover_ms with and without node
    /// authentication, in the same run.
    Trust,
}

/// Dispatches to one benchmark.
pub fn cmd_bench(which: &Bench) -> Result<(), String> {
    match which {
        Bench::Boot => bench_boot(),
        Bench::Sched => bench_in_kernel("bench-sched"),
        Bench::Cells => bench_in_kernel("bench-cells"),
        Bench::Http {
            connections,
            seconds,
        } => bench_http(*connections, *seconds),
        Bench::Net => bench_net(),
        Bench::FailureDetect {
            idle_minutes,
            no_hog,
        } => crate::bench_cluster::failure_detect(*idle_minutes, !*no_hog),
        Bench::Failover { kills, hangs } => crate::bench_cluster::failover(*kills, *hangs),
        Bench::MembershipSim => crate::bench_cluster::simulator("sim-swim"),
        Bench::RaftSim => crate::bench_cluster::simulator("sim-raft"),
        Bench::Raft => crate::bench_raft::raft(),
        Bench::ServiceFailover { runs } => crate::bench_frontdoor::service_failover(*runs),
        Bench::Operate => crate::bench_cluster::operate(),
        Bench::Trust => crate::bench_trust::trust(),
    }
}

/// Median time from QEMU start to the shell prompt, over 5 boots.
fn bench_boot() -> Result<(), String> {
    setup::ensure_qemu()?;
    let image = image::build_image(Profile::Release, image::Flavor::Shell, boot::Firmware::Bios)?;
    let dir = image::fresh_dir(&image::xylem_dir().join("bench-boot"))?;
    let mut samples = Vec::new();
    for i in 0..BOOT_SAMPLES {
        let mut spec = NodeSpec::worker(1, &image);
        spec.name = format!("boot-{i}");
        let mut node = Node::start(spec, &dir).map_err(|e| e.to_string())?;
        node.wait_for_prompt(Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        let ms = node.started.elapsed().as_secs_f64() * 1000.0;
        eprintln!("    boot {i}: {ms:.0} ms to prompt");
        samples.push(ms);
    }
    println!("METRIC boot_to_prompt_ms {:.0} ms", median(&mut samples));
    Ok(())
}

/// The median of a sample (sorted in place).
pub fn median(samples: &mut [f64]) -> f64 {
    assert!(!samples.is_empty(), "median of nothing");
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// Boots the test kernel with one in-kernel benchmark and prints its `METRIC` lines.
fn bench_in_kernel(test: &str) -> Result<(), String> {
    setup::ensure_qemu()?;
    let image = image::build_image(Profile::Release, image::Flavor::Ktest, boot::Firmware::Bios)?;
    let dir = image::fresh_dir(&image::xylem_dir().join(format!("bench-{test}")))?;
    let mut spec = NodeSpec::worker(1, &image);
    spec.name = test.to_string();
    spec.fw_cfg.push(("opt/xylem/ktest".into(), test.into()));
    let mut node = Node::start(spec, &dir).map_err(|e| e.to_string())?;
    let status = node
        .wait_exit(Duration::from_secs(300))
        .map_err(|e| e.to_string())?;
    let out = node.output();
    let metrics: Vec<&str> = out
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("METRIC "))
        .collect();
    if status.code() != Some(qemu_tests::qemu::status::TESTS_PASSED) || metrics.is_empty() {
        return Err(format!(
            "{test} failed (exit status {:?}); see {}",
            status.code(),
            dir.display()
        ));
    }
    for line in metrics {
        println!("{line}");
    }
    Ok(())
}

/// Node-to-node round trips on a two-node fabric: ICMP echo (`ping_rtt_us`, median of 40
/// after an ARP warm-up) and transport envelopes (`transport_rtt_us`, median of 1000
/// `ProbePing`/`ProbePong` exchanges, measured in node 1's kernel by `netbench`).
fn bench_net() -> Result<(), String> {
    setup::ensure_qemu()?;
    let image = image::build_image(Profile::Release, image::Flavor::Shell, boot::Firmware::Bios)?;
    let run_dir = image::fresh_dir(&image::xylem_dir().join("bench-net"))?;
    let env = qemu_tests::Env {
        image: image.clone(),
        ktest_image: image,
        kernel_elf: image::full_elf(Profile::Release, image::Flavor::Shell),
        run_dir,
        kvm: false,
        uefi: None,
    };
    let mut cluster =
        qemu_tests::cluster::Cluster::start(&env, "net", 2, 7).map_err(|e| e.to_string())?;
    let node = cluster.node(1);
    let out = node
        .command(
            &format!("ping worker-2 {NET_PINGS}"),
            Duration::from_secs(120),
        )
        .map_err(|e| e.to_string())?;
    let mut pings: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("rtt_us=").nth(1))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .skip(1)
        .collect();
    if pings.len() + 1 < NET_PINGS as usize {
        return Err(format!(
            "only {} of {NET_PINGS} pings answered: {out}",
            pings.len() + 1
        ));
    }
    let out = node
        .command(
            &format!("netbench worker-2 {NET_PROBES} 1000 3"),
            Duration::from_secs(300),
        )
        .map_err(|e| e.to_string())?;
    eprintln!("    {}", out.trim().replace('\n', "\n    "));
    let p50 = out
        .split("p50=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| format!("no p50 in netbench output: {out}"))?;
    if !out.contains(&format!("answered {NET_PROBES} ")) {
        return Err(format!("not every probe was answered: {out}"));
    }
    println!("METRIC ping_rtt_us {:.0} us", median(&mut pings));
    println!("METRIC transport_rtt_us {p50} us");
    Ok(())
}

/// Warm-up before `bench http` counts answers.
const HTTP_WARMUP: Duration = Duration::from_secs(3);

/// One node running one `http` cell on port 80; the host endpoint (a smoltcp stack on one
/// more fabric port, `qemu_tests::hostnet`) drives a closed loop of `connections` keep-alive
/// connections, each sending `GET /` as soon as the previous answer is complete, for a 3 s
/// warm-up and `seconds` measured. Prints `METRIC http_rps` and `METRIC http_p99_us`
/// (latency from writing the request to the complete answer, on the host), plus p50/p90.
fn bench_http(connections: usize, seconds: u64) -> Result<(), String> {
    use qemu_tests::hostnet::{self, load, Endpoint};
    use qemu_tests::scenarios::cells_net;
    setup::ensure_qemu()?;
    let image = image::build_image(Profile::Release, image::Flavor::Shell, boot::Firmware::Bios)?;
    let run_dir = image::fresh_dir(&image::xylem_dir().join("bench-http"))?;
    let env = qemu_tests::Env {
        image: image.clone(),
        ktest_image: image,
        kernel_elf: image::full_elf(Profile::Release, image::Flavor::Shell),
        run_dir,
        kvm: false,
        uefi: None,
    };
    let mut cluster =
        qemu_tests::cluster::Cluster::start_with_ports(&env, "http", 1, 7, &[hostnet::HOST_ID])
            .map_err(|e| e.to_string())?;
    cells_net::run_cell(cluster.node(1), "http 80", "http: serving").map_err(|e| e.to_string())?;
    let mut endpoint =
        Endpoint::attach(cluster.fabric.dir(), hostnet::HOST_ID).map_err(|e| e.to_string())?;
    let report = load::closed_loop(
        &mut endpoint,
        hostnet::node_addr(1, 80),
        "/",
        connections,
        HTTP_WARMUP,
        Duration::from_secs(seconds),
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "    {} requests in {:.1} s over {connections} connections: p50 {} us, p90 {} us, p99 {} us, max {} us; {} non-200, {} connection errors",
        report.requests,
        report.elapsed.as_secs_f64(),
        report.percentile_us(50.0),
        report.percentile_us(90.0),
        report.percentile_us(99.0),
        report.percentile_us(100.0),
        report.bad_status,
        report.connection_errors
    );
    if report.requests == 0 || report.bad_status > 0 {
        return Err(format!(
            "http bench: {} answers, {} not 200",
            report.requests, report.bad_status
        ));
    }
    println!("METRIC http_rps {:.0} req/s", report.rps());
    println!("METRIC http_p99_us {} us", report.percentile_us(99.0));
    println!("METRIC http_p50_us {} us", report.percentile_us(50.0));
    Ok(())
}
