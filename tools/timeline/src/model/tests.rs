//! A synthetic run: worker-1, worker-2 (killed, restarted), witness, with clock samples
//! for clocks that start at different host times and run at different rates.

use std::path::PathBuf;

use super::*;
use crate::log::parse_log;
use crate::run::NodeLog;

fn node(name: &str, incarnation: u32, text: &str) -> NodeLog {
    NodeLog {
        name: name.into(),
        incarnation,
        dir: PathBuf::new(),
        log: parse_log(text),
        started_unix_us: None,
    }
}

/// `guest_us` for host time `host_us` on a clock that read 0 at `origin` and runs `rate`
/// host µs per guest µs.
fn guest(host_us: i64, origin: i64, rate: f64) -> u64 {
    ((host_us - origin) as f64 / rate).round() as u64
}

fn line(t_us: u64, node: &str, rest: &str) -> String {
    format!("t_us={t_us} node={node} kind={rest}\n")
}

fn clock(host_us: i64, target: &str, incarnation: u32, origin: i64, rate: f64) -> String {
    format!(
        "t_us={host_us} node=harness kind=clock target={target} incarnation={incarnation} guest_us={} rtt_us=900\n",
        guest(host_us, origin, rate)
    )
}

const W1: (i64, f64) = (1_000_000, 1.0);
const W2: (i64, f64) = (1_200_000, 1.02);
const W2B: (i64, f64) = (21_500_000, 0.99);
const WIT: (i64, f64) = (1_100_000, 1.0);
const KILL_US: i64 = 10_000_000;

fn failover_run() -> RunLogs {
    let w1 = |h: i64| guest(h, W1.0, W1.1);
    let w2 = |h: i64| guest(h, W2.0, W2.1);
    let w2b = |h: i64| guest(h, W2B.0, W2B.1);
    let wit = |h: i64| guest(h, WIT.0, WIT.1);
    let mut worker1 = String::new();
    for (h, rest) in [
        (1_005_000, "boot id=1 role=worker"),
        (1_300_000, "node_up peer=2"),
        (1_080_100, "node_up peer=3"),
        (1_500_000, "raft_role role=candidate term=1 leader=0"),
        (1_520_000, "raft_role role=leader term=1 leader=1"),
        (
            3_000_000,
            "xylem_commit index=3 op=assign service=web slot=0 target=2 epoch=1",
        ),
        (
            3_010_000,
            "xylem_commit index=4 op=assign service=web slot=1 target=1 epoch=2",
        ),
        (
            3_020_000,
            "xylem_action action=spawn cell=1 service=web slot=1 epoch=2",
        ),
        (3_025_000, "cell_start cell=1 task=5 payload=hello"),
        (10_200_000, "node_suspect peer=2 incarnation=0"),
        (10_400_000, "node_down peer=2 reason=suspicion_timeout"),
        (
            10_410_000,
            "xylem_commit index=5 op=assign service=web slot=0 target=1 epoch=3",
        ),
        (
            10_420_000,
            "xylem_action action=spawn cell=2 service=web slot=0 epoch=3",
        ),
        (10_434_000, "cell_start cell=2 task=6 payload=hello"),
        (23_000_000, "node_up peer=2"),
    ] {
        worker1.push_str(&line(w1(h), "worker-1", rest));
    }
    let mut worker2 = String::new();
    for (h, rest) in [
        (1_205_000, "boot id=2 role=worker"),
        (1_300_000, "node_up peer=1"),
        (1_600_000, "raft_role role=follower term=1 leader=1"),
        (
            3_050_000,
            "xylem_commit index=3 op=assign service=web slot=0 target=2 epoch=1",
        ),
        (
            3_090_000,
            "xylem_action action=spawn cell=1 service=web slot=0 epoch=1",
        ),
        (
            3_100_000,
            "cell_start cell=1 task=5 payload=<script>alert(1)</script>",
        ),
    ] {
        worker2.push_str(&line(w2(h), "worker-2", rest));
    }
    // A torn write, binary noise and a line spliced from two writes.
    worker2.push_str("t_us=99 node=worker-2 ki\n\u{1}\u{2}\u{3}\nt_us=5 t_us=6 node=x kind=y\n");
    let mut worker2b = String::new();
    for (h, rest) in [
        (21_505_000, "boot id=2 role=worker"),
        (21_900_000, "raft_role role=follower term=1 leader=1"),
    ] {
        worker2b.push_str(&line(w2b(h), "worker-2", rest));
    }
    let mut witness = String::new();
    for (h, rest) in [
        (1_105_000, "boot id=3 role=witness"),
        (1_106_000, "node_up peer=2"),
        (10_300_000, "node_suspect peer=2 incarnation=0"),
        (10_500_000, "node_down peer=2 reason=suspicion_timeout"),
    ] {
        witness.push_str(&line(wit(h), "witness", rest));
    }
    let mut journal = String::from("t_us=0 node=harness kind=run_start unix_us=1700000000000000\n");
    for h in [2_000_000, 9_900_000] {
        journal.push_str(&clock(h, "worker-1", 0, W1.0, W1.1));
        journal.push_str(&clock(h + 1000, "worker-2", 0, W2.0, W2.1));
    }
    journal.push_str(&clock(2_002_000, "witness", 0, WIT.0, WIT.1));
    journal.push_str(&format!(
        "t_us={KILL_US} node=harness kind=signal target=worker-2 incarnation=0 signal=SIGKILL\n"
    ));
    journal.push_str("t_us=20000000 node=harness kind=restart target=worker-2 incarnation=1\n");
    for h in [22_000_000, 24_000_000] {
        journal.push_str(&clock(h, "worker-2", 1, W2B.0, W2B.1));
    }
    RunLogs {
        dir: PathBuf::from("/runs/xylem-kill"),
        nodes: vec![
            node("witness", 0, &witness),
            node("worker-1", 0, &worker1),
            node("worker-2", 0, &worker2),
            node("worker-2", 1, &worker2b),
        ],
        journal: Some(parse_log(&journal)),
    }
}

fn lane<'a>(tl: &'a Timeline, name: &str) -> &'a Lane {
    tl.lanes.iter().find(|l| l.node == name).unwrap()
}

#[test]
fn lanes_follow_node_ids_one_per_node() {
    let tl = build(&failover_run());
    let names: Vec<_> = tl.lanes.iter().map(|l| l.node.as_str()).collect();
    assert_eq!(names, ["worker-1", "worker-2", "witness"]);
    assert_eq!(tl.title, "xylem-kill");
}

#[test]
fn clocks_with_different_origins_and_rates_land_on_host_time() {
    let tl = build(&failover_run());
    // worker-2's clock runs 2 % slow and started 200 ms after worker-1's; its cell started
    // at host 3.100 s.
    let cell = &lane(&tl, "worker-2").cells[0];
    assert!((cell.from_us - 3_100_000).abs() <= 2, "{}", cell.from_us);
    let w1 = lane(&tl, "worker-1");
    let leader = w1.raft.iter().find(|s| s.state == Role::Leader).unwrap();
    assert!((leader.from_us - 1_520_000).abs() <= 2);
    assert!(w1.incarnations[0].alignment.is_precise());
    // The witness has one sample: offset only, still exact for a rate-1 clock.
    let wit = lane(&tl, "witness");
    assert_eq!(
        wit.incarnations[0].alignment,
        Alignment::Offset { samples: 1 }
    );
}

#[test]
fn a_node_restarted_mid_run_has_two_incarnations_and_a_gap() {
    let tl = build(&failover_run());
    let w2 = lane(&tl, "worker-2");
    assert_eq!(w2.incarnations.len(), 2);
    assert_eq!(w2.incarnations[0].to_us, KILL_US);
    assert!((w2.incarnations[1].from_us - W2B.0).abs() <= 2);
    let states: Vec<Process> = w2.process.iter().map(|s| s.state).collect();
    assert_eq!(states, [Process::Up, Process::Killed, Process::Restarted]);
    assert_eq!(w2.process[1].from_us, KILL_US);
    assert!(w2.process[1].raw.contains("SIGKILL"));
    // The first boot's cell ends with the kill, not at the run's end.
    assert_eq!(w2.cells[0].to_us, KILL_US);
    // Raft roles never span the gap.
    assert!(w2
        .raft
        .iter()
        .all(|s| s.to_us <= KILL_US || s.from_us >= W2B.0 - 2));
}

#[test]
fn each_observer_keeps_its_own_membership_view() {
    let tl = build(&failover_run());
    let w2 = lane(&tl, "worker-2");
    let observers: Vec<_> = w2.membership.iter().map(|s| s.observer.as_str()).collect();
    assert_eq!(observers, ["worker-1", "witness"]);
    let seen: Vec<Member> = w2.membership[0].spans.iter().map(|s| s.state).collect();
    assert_eq!(
        seen,
        [Member::Alive, Member::Suspect, Member::Down, Member::Alive]
    );
    let down = &w2.membership[0].spans[2];
    assert!((down.from_us - 10_400_000).abs() <= 2);
    assert!(down.raw.contains("node_down"));
    // A verdict given before the peer booted (SWIM starts configured peers as up) holds
    // from the peer's boot: the witness called worker-2 up 94 ms before worker-2 booted.
    let by_witness = &w2.membership[1];
    assert_eq!(by_witness.spans[0].state, Member::Alive);
    assert_eq!(by_witness.spans[0].from_us, w2.incarnations[0].from_us);
    // A dead observer has no view: worker-2's view of worker-1 ends with its kill.
    let w1 = lane(&tl, "worker-1");
    assert_eq!(w1.membership[0].observer, "worker-2");
    assert_eq!(w1.membership[0].spans.len(), 1);
    assert_eq!(w1.membership[0].spans[0].to_us, KILL_US);
    // The witness never saw worker-2 come back: its last verdict holds to the end.
    assert_eq!(w2.membership[1].spans.last().unwrap().state, Member::Down);
    assert_eq!(
        w2.membership[1].spans.last().unwrap().to_us,
        tl.end_us - MARGIN_US
    );
}

#[test]
fn the_failover_is_measured_from_the_kill_to_the_replacement_cell() {
    let tl = build(&failover_run());
    assert_eq!(tl.failovers.len(), 1, "{:?}", tl.failovers);
    let f = &tl.failovers[0];
    assert_eq!((f.service.as_str(), f.slot), ("web", 0));
    assert_eq!(
        (f.from_node.as_str(), f.to_node.as_str()),
        ("worker-2", "worker-1")
    );
    assert!((f.ms() - 434.0).abs() < 0.01, "{}", f.ms());
    assert_eq!(f.raw.len(), 3);
    assert_eq!(f.fault_label, "SIGKILL worker-2");
    // Commits are counted once however many nodes applied them.
    assert_eq!(tl.commits.len(), 3);
    assert!(tl.commits[0].label.contains("assign web/0@1 → worker-2"));
}

#[test]
fn garbage_lines_are_skipped_and_counted() {
    let tl = build(&failover_run());
    assert_eq!(tl.garbage, 3);
    assert!(
        tl.notes
            .iter()
            .any(|n| n.contains("worker-2 boot 0: skipped 3 garbage")),
        "{:?}",
        tl.notes
    );
}

#[test]
fn a_partition_that_isolates_a_worker_is_a_fault_with_a_failover() {
    let mut run = failover_run();
    // Replace the kill by a partition at the same time; nothing else changes.
    let journal = run.journal.as_mut().unwrap();
    for e in journal.events.iter_mut().filter(|e| e.kind == "signal") {
        *e = crate::log::parse_line(&format!(
            "t_us={KILL_US} node=harness kind=nemesis action=partition groups=1,3|2"
        ))
        .unwrap();
    }
    let tl = build(&run);
    assert_eq!(tl.faults[0].kind, MarkKind::Partition);
    assert_eq!(tl.faults[0].label, "partition worker-1,witness | worker-2");
    assert_eq!(tl.failovers.len(), 1);
    assert!((tl.failovers[0].ms() - 434.0).abs() < 0.01);
}

#[test]
fn without_a_journal_clocks_fall_back_to_file_times() {
    let mut run = failover_run();
    run.journal = None;
    for (i, n) in run.nodes.iter_mut().enumerate() {
        n.started_unix_us = Some(1_000 + i as i64 * 500);
    }
    let tl = build(&run);
    assert!(tl.failovers.is_empty() && tl.faults.is_empty());
    assert!(tl.lanes.iter().all(|l| l
        .incarnations
        .iter()
        .all(|i| i.alignment == Alignment::FileTime)));
    assert!(tl.notes.iter().any(|n| n.contains("no harness journal")));
}

#[test]
fn the_page_parses_and_shows_what_the_model_holds() {
    let tl = build(&failover_run());
    let page = crate::render::html(&tl);
    assert!(!page.contains("<script>"), "raw event text must be escaped");
    let shown = crate::inspect::inspect(&page).unwrap();
    let lanes: Vec<(&str, u32)> = shown.lanes.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    assert_eq!(lanes, [("worker-1", 1), ("worker-2", 2), ("witness", 1)]);
    let (focus, height) = crate::render::focus_html(&tl).unwrap();
    assert!(height > 100);
    assert!(roxmltree::Document::parse_with_options(
        &focus,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        }
    )
    .is_ok());
    assert_eq!(shown.panels, 2, "the overview and one zoomed failover");
    assert_eq!(shown.failovers.len(), 1);
    assert_eq!(shown.failovers[0].ms, 434.0);
    assert_eq!(shown.failovers[0].to, "worker-1");
    assert!(shown.titles > 20, "every shape has a hover title");
    // No network: nothing is fetched from anywhere.
    for needle in ["src=", "href=", "url(", "@import"] {
        assert!(!page.contains(needle), "page references {needle}");
    }
}

#[test]
fn cells_are_named_by_what_the_events_carry() {
    let log = "t_us=1 node=solo kind=boot id=1 role=worker\n\
               t_us=10 node=solo kind=cell_start cell=5 task=1 payload=hello name=api/2@9\n\
               t_us=20 node=solo kind=xylem_action action=spawn cell=6 service=web slot=1 epoch=4\n\
               t_us=21 node=solo kind=cell_start cell=6 task=2 payload=hello\n\
               t_us=30 node=solo kind=cell_start cell=7 task=3 payload=counter\n\
               t_us=40 node=solo kind=cell_exit cell=7 reason=exited_code=0 restarts=0\n";
    let run = RunLogs {
        dir: PathBuf::from("solo"),
        nodes: vec![node("solo", 0, log)],
        journal: None,
    };
    let tl = build(&run);
    let cells = &tl.lanes[0].cells;
    let labels: Vec<&str> = cells.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["api/2@9", "web/1@4", "counter#7"]);
    assert_eq!(cells[2].ended.as_deref(), Some("exited_code=0"));
    assert_eq!(cells[2].to_us - cells[2].from_us, 10);
    // Overlapping bars stack in rows; the third starts after none has ended.
    let rows: Vec<usize> = cells.iter().map(|c| c.row).collect();
    assert_eq!(rows, [0, 1, 2]);
}
