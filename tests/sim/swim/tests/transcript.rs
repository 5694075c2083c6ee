//! Golden transcripts (etcd-raft style): a scripted run's event log, compared line by line
//! with `testdata/<name>.txt`. After an intended behaviour change, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p sim-swim --release --test transcript` and review the diff
//! (the check is `tests/sim/golden.rs`, shared with the Raft transcripts).

#[path = "../../golden.rs"]
mod golden;

use std::fmt::Write as _;

use sim_swim::{Sim, SimConfig};

fn transcript(sim: &Sim, script: &[String]) -> String {
    let mut out = String::new();
    for line in script {
        writeln!(out, "{line}").unwrap();
    }
    for r in &sim.log {
        writeln!(out, "t_ms={} node={} {:?}", r.t_ms, r.observer, r.event).unwrap();
    }
    out
}

fn check_golden(name: &str, actual: &str) {
    golden::check(env!("CARGO_MANIFEST_DIR"), &format!("{name}.txt"), actual);
}

#[test]
fn golden_three_nodes_crash_pause_restart() {
    let mut sim = Sim::new(SimConfig::lan(3, 2024));
    let mut script = vec!["cluster n=3 seed=2024 static".to_string()];
    sim.run_until(1_000);
    script.push("t_ms=1000 crash 2".into());
    sim.crash(2);
    sim.run_until(2_000);
    script.push("t_ms=2000 pause 1".into());
    sim.pause(1);
    sim.run_until(2_120);
    script.push("t_ms=2120 resume 1".into());
    sim.resume(1);
    sim.run_until(3_000);
    script.push("t_ms=3000 restart 2 via 0".into());
    sim.restart(2, 0);
    sim.run_until(4_000);
    check_golden("three_nodes", &transcript(&sim, &script));
}

#[test]
fn golden_partition_and_heal() {
    let mut sim = Sim::new(SimConfig::lan(4, 7));
    let mut script = vec!["cluster n=4 seed=7 static".to_string()];
    sim.run_until(1_000);
    script.push("t_ms=1000 partition [0, 0, 1, 1]".into());
    sim.partition(vec![0, 0, 1, 1]);
    sim.run_until(3_000);
    script.push("t_ms=3000 heal".into());
    sim.heal();
    sim.run_until(5_000);
    check_golden("partition", &transcript(&sim, &script));
}
