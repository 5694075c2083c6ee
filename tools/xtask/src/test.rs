//! `cargo xtask test` and `cargo xtask qemu-cluster`.
//!
//! Lints first (rustfmt and clippy, `lint.rs`), then three tiers, in order: host unit tests of every pure crate and the simulators
//! (`cargo test --release`), in-kernel tests (a `ktest` kernel that reports through QEMU's
//! exit status), and QEMU scenarios — the single-node suite, then the multi-node cluster
//! suite (`qemu-cluster` runs the latter alone). Every step prints progress; the last line
//! is `N passed, N failed`.

use std::process::Stdio;
use std::time::Instant;

use qemu_tests::scenarios::{self, Suite};
use qemu_tests::Env;

use crate::image::{self, cargo};
use crate::{setup, ClusterArgs, TestArgs};

/// Pass/fail counts.
#[derive(Default)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn fail(&mut self, what: String) {
        self.failed += 1;
        self.failures.push(what);
    }

    fn finish(self) -> Result<(), String> {
        if !self.failures.is_empty() {
            println!("\nfailures:");
            for f in &self.failures {
                println!("  {f}");
            }
        }
        println!("\n{} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 {
            Ok(())
        } else {
            Err(format!("{} test(s) failed", self.failed))
        }
    }
}

/// `cargo xtask test [--scenario NAME]`.
pub fn cmd_test(args: &TestArgs) -> Result<(), String> {
    let started = Instant::now();
    let mut tally = Tally::default();
    setup::ensure_qemu()?;
    if args.scenario.is_none() {
        host_tests(&mut tally);
    }
    match image::test_env(args.kvm, "test") {
        Ok(env) => match args.scenario.as_deref() {
            // One scenario, whichever suite it is in.
            Some(name) => run_named(&env, name, &mut tally),
            None => {
                run_scenarios(&env, Suite::Node, None, &mut tally);
                run_scenarios(&env, Suite::Cluster, None, &mut tally);
                if args.heavy {
                    run_scenarios(&env, Suite::Heavy, None, &mut tally);
                }
                if args.soak {
                    run_scenarios(&env, Suite::Soak, None, &mut tally);
                }
            }
        },
        Err(why) => tally.fail(format!("building kernel images: {why}")),
    }
    eprintln!("==> test run took {:.0} s", started.elapsed().as_secs_f64());
    tally.finish()
}

/// `cargo xtask qemu-cluster [--scenario NAME]`.
pub fn cmd_qemu_cluster(args: &ClusterArgs) -> Result<(), String> {
    setup::ensure_qemu()?;
    let env = image::test_env(args.kvm, "cluster")?;
    let mut tally = Tally::default();
    match args.scenario.as_deref() {
        Some(name) => run_named(&env, name, &mut tally),
        None => {
            run_scenarios(&env, Suite::Cluster, None, &mut tally);
            run_scenarios(&env, Suite::Heavy, None, &mut tally);
        }
    }
    tally.finish()
}

fn host_tests(tally: &mut Tally) {
    // The cell crate checks the real payload ELFs against its loader.
    let payloads = match image::build_payloads() {
        Ok(dir) => dir,
        Err(why) => return tally.fail(format!("building payloads: {why}")),
    };
    eprintln!("==> lints (rustfmt --check, clippy -D warnings)");
    crate::lint::lints(tally, &payloads);
    eprintln!("==> host unit tests (cargo test --release)");
    let started = Instant::now();
    let output = cargo()
        .current_dir(crate::root())
        .env("XYLEM_PAYLOAD_DIR", &payloads)
        // The envelope decoder's seeded fuzz runner gets a full minute (the short run).
        .env(
            "NET_FUZZ_SECS",
            std::env::var("NET_FUZZ_SECS").unwrap_or_else(|_| "60".into()),
        )
        // The step fuzzers of the Raft core and the control plane (issue #15.4): a minute each.
        .env(
            "STEP_FUZZ_SECS",
            std::env::var("STEP_FUZZ_SECS").unwrap_or_else(|_| "60".into()),
        )
        .env(
            "CONTROL_FUZZ_SECS",
            std::env::var("CONTROL_FUZZ_SECS").unwrap_or_else(|_| "60".into()),
        )
        .args(["test", "--release", "--no-fail-fast"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => return tally.fail(format!("running cargo test: {e}")),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let (passed, failed) = count_cargo_results(&text);
    for line in text
        .lines()
        .filter(|l| l.contains("FAILED") || l.contains("panicked"))
    {
        println!("    {line}");
    }
    println!(
        "    host tests: {passed} passed, {failed} failed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    tally.passed += passed;
    if failed > 0 {
        tally.failed += failed;
        tally.failures.push(format!(
            "{failed} host unit test(s) failed (see output above)"
        ));
    } else if !output.status.success() {
        tally.fail(format!(
            "cargo test failed without a test failure ({}): a build error?",
            output.status
        ));
    }
}

/// Sums `test result: ok. N passed; M failed; …` lines.
fn count_cargo_results(text: &str) -> (u64, u64) {
    let mut totals = (0, 0);
    for line in text.lines().filter(|l| l.starts_with("test result:")) {
        let number_before = |word: &str| -> u64 {
            line.split(';')
                .find(|part| part.trim_end().ends_with(word))
                .and_then(|part| part.split_whitespace().rev().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        totals.0 += number_before("passed");
        totals.1 += number_before("failed");
    }
    totals
}

fn run_named(env: &Env, name: &str, tally: &mut Tally) {
    match scenarios::ALL.iter().find(|s| s.name == name) {
        Some(s) => run_scenarios(env, s.suite, Some(name), tally),
        None => tally.fail(format!("no scenario named '{name}'")),
    }
}

fn run_scenarios(env: &Env, suite: Suite, only: Option<&str>, tally: &mut Tally) {
    let chosen: Vec<_> = scenarios::ALL
        .iter()
        .filter(|s| s.suite == suite && only.is_none_or(|n| n == s.name))
        .collect();
    if let Some(name) = only {
        if chosen.is_empty() {
            tally.fail(format!("no {suite:?} scenario named '{name}'"));
            return;
        }
    }
    eprintln!("==> {} QEMU scenario(s), {:?} suite", chosen.len(), suite);
    for scenario in chosen {
        let started = Instant::now();
        let started_at = std::time::SystemTime::now();
        match (scenario.run)(env) {
            Ok(()) => {
                tally.passed += 1;
                println!(
                    "scenario {} ok ({:.1} s)",
                    scenario.name,
                    started.elapsed().as_secs_f64()
                );
            }
            Err(why) => {
                println!("scenario {} FAILED: {why}", scenario.name);
                crate::timeline::after_failure(&env.run_dir, started_at);
                tally.fail(format!("scenario {}: {why}", scenario.name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::count_cargo_results;

    #[test]
    fn sums_cargo_test_result_lines() {
        let text = "test result: ok. 11 passed; 0 failed; 0 ignored\nnoise\ntest result: FAILED. 3 passed; 2 failed; 1 ignored";
        assert_eq!(count_cargo_results(text), (14, 2));
    }
}
