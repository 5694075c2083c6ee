//! Host tests of the scheduler: feasibility, spread, scoring, moves, crash loops, bounds.

use super::*;
use crate::desired::ApplyError;
use crate::service::PayloadCatalog;
use alloc::string::ToString;
use alloc::vec;

const W1: NodeId = 1;
const W2: NodeId = 2;
const WITNESS: NodeId = 3;

fn view(id: NodeId, role: NodeRole) -> NodeView {
    NodeView {
        id,
        role,
        alive: true,
        draining: false,
        load_milli: 100,
        free_mib: 1024,
        cells: 0,
        crashloops: Vec::new(),
    }
}

fn cluster() -> Vec<NodeView> {
    vec![
        view(W1, NodeRole::Worker),
        view(W2, NodeRole::Worker),
        view(WITNESS, NodeRole::Witness),
    ]
}

struct World {
    ds: DesiredState,
    tracker: CrashLoopTracker,
    config: Config,
}

impl World {
    fn new() -> Self {
        let ds = DesiredState::new(PayloadCatalog::new(&["echo"]));
        Self {
            ds,
            tracker: CrashLoopTracker::new(),
            config: Config::default(),
        }
    }

    fn apply(&mut self, command: &Command) -> Result<crate::desired::Applied, ApplyError> {
        let index = self.ds.applied_index() + 1;
        self.ds.apply(index, command)
    }

    fn service(&mut self, name: &str, replicas: u16, spread: Spread) {
        let mut spec = ServiceSpec::new(name, "echo", replicas);
        spec.placement = spread;
        self.apply(&Command::ApplyService(spec)).unwrap();
    }

    fn plan(&mut self, nodes: &[NodeView], now_ms: u64) -> Plan {
        plan(&self.ds, nodes, &mut self.tracker, &self.config, now_ms)
    }

    /// Plans and applies every command; asserts they all apply.
    fn converge(&mut self, nodes: &[NodeView], now_ms: u64) -> Plan {
        let p = self.plan(nodes, now_ms);
        for c in &p.commands {
            self.apply(c).unwrap();
        }
        p
    }

    fn nodes_of(&self, name: &str) -> Vec<NodeId> {
        self.ds.assignments_of(name).map(|(_, a)| a.node).collect()
    }
}

#[test]
fn fills_slots_spread_over_workers_never_the_witness() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    let p = w.converge(&cluster(), 0);
    assert_eq!(p.commands.len(), 2);
    assert!(p.pending.is_empty());
    assert_eq!(w.nodes_of("web"), vec![W1, W2]);
    assert_eq!(
        w.plan(&cluster(), 1),
        Plan::default(),
        "level-triggered: nothing more to do"
    );
}

#[test]
fn soft_spread_never_doubles_up_while_another_node_has_fewer() {
    let mut w = World::new();
    w.service("web", 5, Spread::Soft);
    w.converge(&cluster(), 0);
    let nodes = w.nodes_of("web");
    let on_w1 = nodes.iter().filter(|n| **n == W1).count();
    assert_eq!((on_w1, nodes.len() - on_w1), (3, 2));
    assert!(!nodes.contains(&WITNESS));
}

#[test]
fn hard_spread_leaves_extra_slots_pending() {
    let mut w = World::new();
    w.service("web", 3, Spread::Hard);
    let p = w.converge(&cluster(), 0);
    assert_eq!(p.commands.len(), 2);
    let pending = Pending {
        service: "web".to_string(),
        slot: 2,
        reason: PendingReason::NoFeasibleNode,
    };
    assert_eq!(p.pending, vec![pending]);
}

#[test]
fn scoring_prefers_low_load_then_free_memory_then_low_id() {
    let mut w = World::new();
    w.service("web", 1, Spread::Soft);
    let mut nodes = cluster();
    nodes[0].load_milli = 900;
    assert!(matches!(
        w.plan(&nodes, 0).commands[0],
        Command::Assign { node: W2, .. }
    ));
    nodes[0].load_milli = 100;
    nodes[1].free_mib = 100;
    assert!(matches!(
        w.plan(&nodes, 0).commands[0],
        Command::Assign { node: W1, .. }
    ));
    nodes[1].free_mib = 1024;
    assert!(matches!(
        w.plan(&nodes, 0).commands[0],
        Command::Assign { node: W1, .. }
    ));
    // The witness stays ineligible even when it looks best.
    nodes[0].load_milli = 5000;
    nodes[1].load_milli = 5000;
    nodes[2].load_milli = 0;
    assert!(matches!(
        w.plan(&nodes, 0).commands[0],
        Command::Assign { node: W1, .. }
    ));
}

#[test]
fn one_plan_spreads_load_estimates() {
    // Two services of one replica each: the second goes to the other worker because the first
    // placement is charged to its node.
    let mut w = World::new();
    w.service("a", 1, Spread::Soft);
    w.service("b", 1, Spread::Soft);
    w.converge(&cluster(), 0);
    assert_eq!((w.nodes_of("a"), w.nodes_of("b")), (vec![W1], vec![W2]));
}

#[test]
fn infeasible_nodes_are_filtered() {
    let mut w = World::new();
    w.service("web", 1, Spread::Soft);
    let mut nodes = cluster();
    nodes[0].free_mib = 10;
    nodes[1].alive = false;
    let p = w.plan(&nodes, 0);
    assert!(p.commands.is_empty());
    assert_eq!(p.pending[0].reason, PendingReason::NoFeasibleNode);
    nodes[0].free_mib = 1024;
    nodes[0].cells = w.config.placement.cells_per_node_max;
    assert!(w.plan(&nodes, 0).commands.is_empty());
    nodes[0].cells = 0;
    nodes[0].draining = true;
    assert!(w.plan(&nodes, 0).commands.is_empty());
    w.apply(&Command::SetDraining {
        node: W2,
        draining: true,
    })
    .unwrap();
    nodes[0].draining = false;
    nodes[1].alive = true;
    assert!(matches!(
        w.plan(&nodes, 0).commands[..],
        [Command::Assign { node: W1, .. }]
    ));
}

#[test]
fn dead_node_slots_move_with_a_higher_epoch() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    w.converge(&cluster(), 0);
    let old = w.ds.assignment("web", 1).unwrap();
    assert_eq!(old.node, W2);
    let mut nodes = cluster();
    nodes[1].alive = false;
    let p = w.converge(&nodes, 10);
    assert_eq!(p.commands.len(), 1);
    let new = w.ds.assignment("web", 1).unwrap();
    assert_eq!(new.node, W1);
    assert!(new.epoch > old.epoch);
    assert_eq!(
        w.ds.assignment("web", 0).unwrap().epoch,
        1,
        "healthy slot untouched"
    );
    // W2 comes back: nothing moves back (no rebalancing).
    assert_eq!(w.plan(&cluster(), 20), Plan::default());
}

#[test]
fn unknown_node_is_treated_as_lost_and_no_target_is_pending() {
    let mut w = World::new();
    w.service("web", 1, Spread::Soft);
    w.apply(&Command::Assign {
        service: "web".into(),
        slot: 0,
        node: 99,
        epoch: 1,
    })
    .unwrap();
    let mut nodes = cluster();
    nodes[0].alive = false;
    nodes[1].alive = false;
    let p = w.plan(&nodes, 0);
    assert!(p.commands.is_empty());
    assert_eq!(p.pending[0].reason, PendingReason::NodeLost { node: 99 });
    let p = w.plan(&cluster(), 0);
    assert!(matches!(
        p.commands[..],
        [Command::Assign {
            node: W1,
            epoch: 2,
            ..
        }]
    ));
}

#[test]
fn scale_down_drops_highest_slots() {
    let mut w = World::new();
    w.service("web", 4, Spread::Soft);
    w.converge(&cluster(), 0);
    w.apply(&Command::Scale {
        name: "web".into(),
        replicas: 1,
    })
    .unwrap();
    let p = w.converge(&cluster(), 0);
    assert_eq!(p.commands.len(), 3);
    assert!(p
        .commands
        .iter()
        .all(|c| matches!(c, Command::Unassign { .. })));
    let slots: Vec<Slot> = w.ds.assignments_of("web").map(|(s, _)| s).collect();
    assert_eq!(slots, vec![0]);
    assert_eq!(w.plan(&cluster(), 0), Plan::default());
}

#[test]
fn draining_moves_slots_off_or_reports_blocked() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    w.converge(&cluster(), 0);
    w.apply(&Command::SetDraining {
        node: W2,
        draining: true,
    })
    .unwrap();
    let p = w.converge(&cluster(), 0);
    assert_eq!(p.commands.len(), 1);
    assert_eq!(w.nodes_of("web"), vec![W1, W1]);
    // Both workers draining: the slot on W1 stays and is reported, it is not dropped.
    w.apply(&Command::SetDraining {
        node: W1,
        draining: true,
    })
    .unwrap();
    let p = w.plan(&cluster(), 0);
    assert!(p.commands.is_empty());
    assert_eq!(p.pending.len(), 2);
    assert_eq!(
        p.pending[0].reason,
        PendingReason::DrainBlocked { node: W1 }
    );
}

#[test]
fn crash_loop_moves_are_delayed_and_bounded() {
    let mut w = World::new();
    w.service("web", 1, Spread::Soft);
    w.converge(&cluster(), 0);
    let mut moves = 0;
    for second in 0..3_600u64 {
        let now_ms = second * 1_000;
        // Whatever node holds the slot reports it crash-looping (a payload bug).
        let a = w.ds.assignment("web", 0).unwrap();
        let mut nodes = cluster();
        let holder = nodes.iter_mut().find(|n| n.id == a.node).unwrap();
        holder.crashloops.push(("web".into(), 0, a.epoch));
        let p = w.converge(&nodes, now_ms);
        if second == 0 {
            let until_ms = w.config.crashloop.delay_ms;
            assert_eq!(
                p.pending[0].reason,
                PendingReason::CrashLoopBackoff { until_ms }
            );
        }
        if let [Command::Assign { node, .. }] = p.commands[..] {
            assert_ne!(node, a.node, "a move goes to another node");
            assert_ne!(node, WITNESS);
            moves += 1;
        }
    }
    assert_eq!(moves, w.config.crashloop.moves_max);
    assert_eq!(w.tracker.moves("web", 0), moves);
}

#[test]
fn crash_loop_on_a_stale_epoch_is_ignored() {
    let mut w = World::new();
    w.service("web", 1, Spread::Soft);
    w.converge(&cluster(), 0);
    let mut nodes = cluster();
    nodes[0].crashloops.push(("web".into(), 0, 0));
    assert_eq!(w.plan(&nodes, 100_000), Plan::default());
    assert!(w.tracker.is_empty());
}

#[test]
fn plans_are_bounded_and_resume_next_round() {
    let mut w = World::new();
    w.config.placement.plan_commands_max = 3;
    w.service("web", 5, Spread::Soft);
    let p = w.converge(&cluster(), 0);
    assert_eq!(p.commands.len(), 3);
    assert_eq!(p.pending.len(), 2);
    assert!(p
        .pending
        .iter()
        .all(|p| p.reason == PendingReason::PlanFull));
    let p = w.converge(&cluster(), 0);
    assert_eq!((p.commands.len(), p.pending.len()), (2, 0));
}

#[test]
fn input_order_does_not_matter() {
    let mut w = World::new();
    w.service("a", 3, Spread::Soft);
    w.service("b", 2, Spread::Hard);
    let mut nodes = cluster();
    nodes.push(view(4, NodeRole::Worker));
    nodes[0].load_milli = 300;
    let forward = w.plan(&nodes, 0);
    nodes.reverse();
    assert_eq!(w.plan(&nodes, 0), forward);
}

#[test]
fn a_duplicated_plan_is_fenced_by_epochs() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    let p = w.plan(&cluster(), 0);
    for c in &p.commands {
        w.apply(c).unwrap();
    }
    for c in &p.commands {
        assert!(matches!(w.apply(c), Err(ApplyError::StaleEpoch { .. })));
    }
    assert_eq!(w.ds.assignments().count(), 2);
}

#[test]
fn view_from_report_carries_crashloops() {
    use crate::report::{CellReport, NodeReport};
    use crate::CellState;
    let cell = |state| CellReport {
        cell_id: 1,
        service: "web".into(),
        slot: 0,
        epoch: 4,
        state,
        restarts: 9,
        uptime_s: 0,
    };
    let report = NodeReport::new(
        W1,
        1,
        250,
        512,
        vec![cell(CellState::CrashLoop), cell(CellState::Running)],
    );
    let v = NodeView::from_report(&report, NodeRole::Worker, true, false);
    assert_eq!((v.id, v.load_milli, v.free_mib, v.cells), (W1, 250, 512, 2));
    assert_eq!(v.crashloops, vec![("web".to_string(), 0, 4)]);
}

#[test]
fn a_failed_move_still_occupies_its_node_for_spread() {
    // Slot 0 crash-loops on W2 and cannot move (W1 is dead); slot 1 is lost with W1. Under hard
    // spread slot 1 must not land on W2, which still runs slot 0.
    let mut w = World::new();
    w.config.crashloop.delay_ms = 0;
    w.service("web", 2, Spread::Hard);
    w.apply(&Command::Assign {
        service: "web".into(),
        slot: 0,
        node: W2,
        epoch: 1,
    })
    .unwrap();
    w.apply(&Command::Assign {
        service: "web".into(),
        slot: 1,
        node: W1,
        epoch: 2,
    })
    .unwrap();
    let mut nodes = cluster();
    nodes[0].alive = false;
    nodes[1].crashloops.push(("web".into(), 0, 1));
    let p = w.plan(&nodes, 0);
    assert!(p.commands.is_empty(), "{p:?}");
    let reasons: Vec<_> = p.pending.iter().map(|p| p.reason.clone()).collect();
    assert_eq!(
        reasons,
        vec![
            PendingReason::CrashLoopNoTarget,
            PendingReason::NodeLost { node: W1 }
        ]
    );
}

#[test]
fn unreported_members_keep_their_slots_but_get_nothing_new() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    w.converge(&cluster(), 0);
    // A fresh leader has heard from nobody yet: bindings stay, nothing is planned.
    let nodes: Vec<NodeView> = cluster()
        .iter()
        .map(|v| NodeView::unreported(v.id, v.role, true, false))
        .collect();
    assert_eq!(w.plan(&nodes, 0), Plan::default());
    w.apply(&Command::Scale {
        name: "web".into(),
        replicas: 3,
    })
    .unwrap();
    let p = w.plan(&nodes, 0);
    assert!(p.commands.is_empty());
    assert_eq!(p.pending[0].reason, PendingReason::NoFeasibleNode);
}
