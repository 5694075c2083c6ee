//! Cost of the control-plane functions at the largest sizes the limits allow.
//!
//! Prints `METRIC <name> <value> <unit>` lines (run with `--nocapture`, ideally `--release`):
//! `cargo test -p xylem --release --test bench -- --nocapture`. The numbers are machine
//! dependent, so only the results (not the timings) are asserted.

use std::time::Instant;
use xylem::command::Command;
use xylem::config::Config;
use xylem::desired::{DesiredState, SERVICES_MAX};
use xylem::placement::{plan, NoFence, NodeView, Refill};
use xylem::reconcile::{reconcile, LocalCell};
use xylem::service::{PayloadCatalog, ServiceSpec, REPLICAS_CAP};
use xylem::{CellState, NodeRole};

const WORKERS: u64 = 16;

fn views() -> Vec<NodeView> {
    (1..=WORKERS + 1)
        .map(|id| NodeView {
            id,
            role: if id > WORKERS {
                NodeRole::Witness
            } else {
                NodeRole::Worker
            },
            alive: true,
            draining: false,
            load_milli: 100,
            free_mib: 100_000,
            cells: 0,
            done: Vec::new(),
            reported: Vec::new(),
        })
        .collect()
}

fn metric(name: &str, value: f64, unit: &str) {
    println!("METRIC {name} {value:.1} {unit}");
}

#[test]
fn largest_cluster_costs() {
    let mut ds = DesiredState::new(PayloadCatalog::new(&["echo"]));
    let mut config = Config::default();
    config.placement.plan_commands_max = usize::MAX;
    config.placement.cells_per_node_max = u32::MAX;
    let mut index = 0;
    for i in 0..SERVICES_MAX {
        index += 1;
        let spec = ServiceSpec::new(&format!("svc-{i}"), "echo", REPLICAS_CAP);
        ds.apply(index, &Command::ApplyService(spec)).unwrap();
    }
    let slots = SERVICES_MAX * usize::from(REPLICAS_CAP);
    let mut tracker = Refill::new(&config, 0);
    let mut nodes = views();

    let start = Instant::now();
    let first = plan(&ds, &nodes, &mut tracker, &NoFence, &config, 0);
    metric("plan_fill_us", start.elapsed().as_secs_f64() * 1e6, "us");
    assert_eq!(first.commands.len(), slots);

    let start = Instant::now();
    let mut encoded = Vec::with_capacity(slots);
    for c in &first.commands {
        encoded.push(c.encode().unwrap());
    }
    for bytes in &encoded {
        index += 1;
        ds.apply(index, &Command::decode(bytes).unwrap()).unwrap();
    }
    let per_command_ns = start.elapsed().as_secs_f64() * 1e9 / slots as f64;
    metric("encode_decode_apply_ns_per_command", per_command_ns, "ns");

    let start = Instant::now();
    let steady = plan(&ds, &nodes, &mut tracker, &NoFence, &config, 1);
    metric("plan_steady_us", start.elapsed().as_secs_f64() * 1e6, "us");
    assert!(steady.commands.is_empty());

    nodes[0].alive = false;
    let start = Instant::now();
    let moves = plan(&ds, &nodes, &mut tracker, &NoFence, &config, 2);
    metric(
        "plan_node_down_us",
        start.elapsed().as_secs_f64() * 1e6,
        "us",
    );
    assert_eq!(moves.commands.len(), slots / WORKERS as usize);

    // Node 2's cell table at steady state: reconcile must find nothing to do.
    let cells: Vec<LocalCell> = ds
        .assignments()
        .filter(|(_, _, a)| a.node == 2)
        .enumerate()
        .map(|(i, (service, slot, a))| LocalCell {
            id: i as u64,
            service: service.to_string(),
            slot,
            epoch: a.epoch,
            state: CellState::Running,
        })
        .collect();
    let start = Instant::now();
    let local = reconcile(&ds, 2, &cells, true);
    metric(
        "reconcile_steady_us",
        start.elapsed().as_secs_f64() * 1e6,
        "us",
    );
    metric("reconcile_cells", cells.len() as f64, "cells");
    assert!(local.actions.is_empty());

    let start = Instant::now();
    let snapshot = ds.snapshot();
    let back = DesiredState::restore(&snapshot, PayloadCatalog::new(&["echo"])).unwrap();
    metric(
        "snapshot_roundtrip_us",
        start.elapsed().as_secs_f64() * 1e6,
        "us",
    );
    metric("snapshot_bytes", snapshot.len() as f64, "bytes");
    assert_eq!(back, ds);
}
