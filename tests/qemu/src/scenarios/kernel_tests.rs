//! In-kernel tests: boot the `ktest` kernel, let it run its tests, read the verdict from
//! QEMU's exit status; and the fatal tests, which must end in a fault report and status 99.

use std::time::Duration;

use crate::node::Node;
use crate::qemu::{status, NodeSpec};
use crate::{ensure, Env, HarnessError};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn boot_ktest(env: &Env, name: &str, selection: &str) -> Result<Node, HarnessError> {
    let mut spec = NodeSpec::worker(1, &env.ktest_image);
    spec.name = name.to_string();
    spec.kvm = env.kvm;
    spec.fw_cfg
        .push(("opt/xylem/ktest".into(), selection.into()));
    Node::start(spec, &env.run_dir)
}

/// Every non-fatal in-kernel test passes.
pub fn all(env: &Env) -> Result<(), HarnessError> {
    let mut node = boot_ktest(env, "ktest-all", "all")?;
    let exit = node.wait_exit(RUN_TIMEOUT)?;
    let out = node.output();
    for line in out.lines().filter(|l| l.starts_with("ktest ")) {
        println!("    {}", line.trim_end());
    }
    let summary = out
        .lines()
        .find(|l| l.starts_with("ktest: "))
        .unwrap_or("(no summary line)")
        .trim();
    ensure!(
        exit.code() == Some(status::TESTS_PASSED),
        "in-kernel tests: {summary}, exit status {:?}",
        exit.code()
    );
    ensure!(summary.ends_with(" 0 failed"), "in-kernel tests: {summary}");
    Ok(())
}

/// A page fault in the kernel prints vector, error code, RIP, CR2 and a backtrace, then
/// QEMU exits with the panic status.
pub fn fatal_pagefault(env: &Env) -> Result<(), HarnessError> {
    let mut node = boot_ktest(env, "ktest-pagefault", "fatal-pagefault")?;
    let exit = node.wait_exit(RUN_TIMEOUT)?;
    let out = node.output();
    ensure!(
        exit.code() == Some(status::PANIC),
        "exit status {:?}, expected {} (panic)",
        exit.code(),
        status::PANIC
    );
    for needle in [
        "CPU EXCEPTION: page fault",
        "vector=14",
        "rip=0x",
        "error_code=0x2",
        "cr2=0x00000000deadbeef",
        "backtrace",
        "#1 ",
        "KERNEL PANIC",
    ] {
        ensure!(
            out.contains(needle),
            "fault report lacks {needle:?}: {}",
            tail(&out)
        );
    }
    Ok(())
}

/// A kernel panic prints its message and location and exits with the panic status.
pub fn fatal_panic(env: &Env) -> Result<(), HarnessError> {
    let mut node = boot_ktest(env, "ktest-panic", "fatal-panic")?;
    let exit = node.wait_exit(RUN_TIMEOUT)?;
    let out = node.output();
    ensure!(
        exit.code() == Some(status::PANIC),
        "exit status {:?}, expected {}",
        exit.code(),
        status::PANIC
    );
    ensure!(
        out.contains("KERNEL PANIC at kernel/src/ktest/mod.rs"),
        "panic location missing: {}",
        tail(&out)
    );
    ensure!(
        out.contains("deliberate panic"),
        "panic message missing: {}",
        tail(&out)
    );
    Ok(())
}

fn tail(out: &str) -> &str {
    let start = out.len().saturating_sub(400);
    out.get(start..).unwrap_or(out)
}
