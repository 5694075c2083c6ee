//! `cargo xtask bench …`: benchmarks that print `METRIC <name> <value> <unit>` lines.

use std::time::Duration;

use qemu_tests::node::Node;
use qemu_tests::qemu::NodeSpec;

use crate::image::{self, Profile};
use crate::setup;

const BOOT_SAMPLES: usize = 5;
const AVAILABLE: &str = "available: boot, sched";

/// Dispatches to one benchmark.
pub fn cmd_bench(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("boot") => bench_boot(),
        Some("sched") => bench_in_kernel("bench-sched"),
        Some(other) => Err(format!("unknown benchmark '{other}' ({AVAILABLE})")),
        None => Err(format!("usage: cargo xtask bench <name> ({AVAILABLE})")),
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
        node.wait_for_prompt(Duration::from_secs(60)).map_err(|e| e.to_string())?;
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
    let status = node.wait_exit(Duration::from_secs(300)).map_err(|e| e.to_string())?;
    let out = node.output();
    let metrics: Vec<&str> = out.lines().map(str::trim_end).filter(|l| l.starts_with("METRIC ")).collect();
    if status.code() != Some(qemu_tests::qemu::status::TESTS_PASSED) || metrics.is_empty() {
        return Err(format!("{test} failed (exit status {:?}); see {}", status.code(), dir.display()));
    }
    for line in metrics {
        println!("{line}");
    }
    Ok(())
}
