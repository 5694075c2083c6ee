//! Host tests of the scheduler: feasibility, spread, scoring, moves, refills of done slots,
//! fenced slots, bounds.

use super::*;
use crate::desired::ApplyError;
use crate::operate::{Maintenance, OperateError};
use crate::service::PayloadCatalog;
use crate::{CellState, Epoch};
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
        done: Vec::new(),
        reported: Vec::new(),
    }
}

fn assign(service: &str, slot: Slot, node: NodeId, epoch: Epoch) -> Command {
    Command::Assign {
        service: service.into(),
        slot,
        node,
        epoch,
        reason: Reason::Place,
    }
}

/// A fence gate with a fixed answer.
struct Gate(bool);

impl FenceGate for Gate {
    fn clear(&self, _: &str, _: Slot) -> bool {
        self.0
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
    refill: Refill,
    config: Config,
    gate: bool,
}

impl World {
    fn new() -> Self {
        let ds = DesiredState::new(PayloadCatalog::new(&["echo"]));
        let config = Config::default();
        Self {
            ds,
            refill: Refill::new(&config, 0),
            config,
            gate: true,
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
        let gate = Gate(self.gate);
        plan(
            &self.ds,
            nodes,
            &mut self.refill,
            &gate,
            &self.config,
            now_ms,
        )
    }

    fn fenced(&mut self, name: &str, replicas: u16) {
        let mut spec = ServiceSpec::new(name, "echo", replicas);
        spec.fenced = true;
        self.apply(&Command::ApplyService(spec)).unwrap();
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
    w.apply(&assign("web", 0, 99, 1)).unwrap();
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

/// A report row for the cell of `(service, slot, epoch)`.
fn seen(service: &str, slot: Slot, epoch: Epoch, state: CellState, uptime_s: u32) -> CellReport {
    CellReport {
        cell_id: 1,
        service: service.into(),
        slot,
        epoch,
        state,
        restarts: 0,
        uptime_s,
        cpu_pct: 0,
        listening: false,
    }
}

/// The cluster with `cells` reported by `node`.
fn cluster_seeing(node: NodeId, cells: Vec<CellReport>) -> Vec<NodeView> {
    let mut nodes = cluster();
    nodes.iter_mut().find(|v| v.id == node).unwrap().reported = cells;
    nodes
}

#[test]
fn draining_replaces_before_it_stops_or_reports_blocked() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    w.converge(&cluster(), 0);
    w.apply(&Command::SetDraining {
        node: W2,
        draining: true,
    })
    .unwrap();
    // Make-before-break: a replacement on W1, the slot stays bound to W2 meanwhile.
    let p = w.converge(&cluster(), 0);
    assert_eq!(p.commands.len(), 1);
    let Command::Surge {
        slot, node, epoch, ..
    } = p.commands[0].clone()
    else {
        panic!("{:?}", p.commands)
    };
    assert_eq!((slot, node), (1, W1));
    assert_eq!(w.nodes_of("web"), vec![W1, W2]);
    assert_eq!(w.ds.maintenance(W2), Maintenance::Draining);
    // Not ready yet (starting, then running for less than a second): nothing moves.
    for (state, uptime_s) in [(CellState::Starting, 0), (CellState::Running, 0)] {
        let nodes = cluster_seeing(W1, vec![seen("web", 1, epoch, state, uptime_s)]);
        let p = w.plan(&nodes, 0);
        assert!(p.commands.is_empty(), "{:?}", p.commands);
        assert_eq!(p.pending[0].reason, PendingReason::Replacing { node: W1 });
    }
    let nodes = cluster_seeing(W1, vec![seen("web", 1, epoch, CellState::Running, 1)]);
    let p = w.converge(&nodes, 0);
    assert!(matches!(p.commands[..], [Command::Promote { slot: 1, .. }]));
    assert_eq!(w.nodes_of("web"), vec![W1, W1]);
    assert_eq!(w.ds.maintenance(W2), Maintenance::Drained);
    // Both workers draining: the slots on W1 stay and are reported, nothing is dropped.
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

/// For a service with a port, a replacement is promoted only once it has run `ready_s` AND
/// its node reports it listening on the port: a cell that runs but has not bound (or lost)
/// its listener would take the slot's connections and refuse them. A service without a port
/// is ready by run time alone.
#[test]
fn a_replacement_of_a_service_with_a_port_waits_until_it_listens() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    w.apply(&Command::Expose {
        service: "web".into(),
        port: 80,
    })
    .unwrap();
    w.service("batch", 2, Spread::Soft);
    w.converge(&cluster(), 0);
    w.apply(&Command::SetDraining {
        node: W2,
        draining: true,
    })
    .unwrap();
    let p = w.converge(&cluster(), 0);
    let surges: Vec<(String, Slot, Epoch)> = p
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Surge {
                service,
                slot,
                epoch,
                node: W1,
                reason: Reason::Drain,
                ..
            } => Some((service.clone(), *slot, *epoch)),
            _ => None,
        })
        .collect();
    assert_eq!(surges.len(), 2, "{:?}", p.commands);
    let epoch_of = |svc: &str| {
        surges
            .iter()
            .find(|s| s.0 == svc)
            .map(|s| (s.1, s.2))
            .unwrap()
    };
    let (web_slot, web_epoch) = epoch_of("web");
    let (batch_slot, batch_epoch) = epoch_of("batch");
    // Both running for 5 s, neither listening: only `batch` (no port) is promoted.
    let rows = |listening: bool| {
        let mut web = seen("web", web_slot, web_epoch, CellState::Running, 5);
        web.listening = listening;
        let batch = seen("batch", batch_slot, batch_epoch, CellState::Running, 5);
        cluster_seeing(W1, vec![web, batch])
    };
    for _ in 0..3 {
        let p = w.converge(&rows(false), 0);
        assert!(
            p.commands.iter().all(|c| !matches!(
                c,
                Command::Promote { service, .. } if service == "web"
            )),
            "promoted a replacement that does not listen: {:?}",
            p.commands
        );
        assert!(p
            .pending
            .iter()
            .any(|q| q.service == "web" && q.reason == PendingReason::Replacing { node: W1 }));
    }
    assert_eq!(w.ds.assignment("batch", batch_slot).unwrap().node, W1);
    assert_eq!(w.ds.assignment("web", web_slot).unwrap().node, W2);
    // Listening but restarted into a fresh run (uptime 0): still not ready.
    let mut fresh = rows(true);
    for v in &mut fresh {
        for c in &mut v.reported {
            c.uptime_s = 0;
        }
    }
    let p = w.plan(&fresh, 0);
    assert!(!p
        .commands
        .iter()
        .any(|c| matches!(c, Command::Promote { .. })));
    // Listening and running long enough: promoted, the drain finishes.
    let p = w.converge(&rows(true), 0);
    assert!(p.commands.iter().any(|c| matches!(
        c,
        Command::Promote { service, slot, .. } if service == "web" && *slot == web_slot
    )));
    assert_eq!(w.ds.assignment("web", web_slot).unwrap().node, W1);
    assert_eq!(w.ds.maintenance(W2), Maintenance::Drained);
}

#[test]
fn a_cordoned_node_gets_nothing_new_but_keeps_its_cells() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    w.converge(&cluster(), 0);
    w.apply(&Command::Maintain {
        node: W2,
        mode: Maintenance::Cordoned,
    })
    .unwrap();
    assert_eq!(w.plan(&cluster(), 0), Plan::default());
    w.apply(&Command::Scale {
        name: "web".into(),
        replicas: 4,
    })
    .unwrap();
    w.converge(&cluster(), 0);
    assert_eq!(w.nodes_of("web"), vec![W1, W2, W1, W1]);
    w.apply(&Command::Maintain {
        node: W2,
        mode: Maintenance::Active,
    })
    .unwrap();
    assert_eq!(w.ds.maintenance(W2), Maintenance::Active);
}

#[test]
fn a_lost_node_promotes_its_replacement_and_a_lost_replacement_is_given_up() {
    let mut w = World::new();
    w.service("web", 1, Spread::Soft);
    w.converge(&cluster(), 0);
    let from = w.nodes_of("web")[0];
    w.apply(&Command::SetDraining {
        node: from,
        draining: true,
    })
    .unwrap();
    let p = w.converge(&cluster(), 0);
    let Command::Surge { node: to, .. } = p.commands[0] else {
        panic!("{:?}", p.commands)
    };
    // The replacement's node dies before it is ready: given up, and tried again elsewhere
    // (nowhere here: the only other worker is gone, so the drain is blocked, the cell stays).
    let mut nodes = cluster();
    nodes.iter_mut().find(|v| v.id == to).unwrap().alive = false;
    let p = w.converge(&nodes, 0);
    assert!(matches!(p.commands[..], [Command::Unsurge { .. }]), "{p:?}");
    assert_eq!(w.ds.surge("web", 0), None);
    assert_eq!(w.nodes_of("web"), vec![from]);
    // Again, and now the draining node dies: the replacement (starting) takes over at once.
    let p = w.converge(&cluster(), 0);
    assert!(matches!(p.commands[..], [Command::Surge { .. }]));
    let mut nodes = cluster();
    nodes.iter_mut().find(|v| v.id == from).unwrap().alive = false;
    let p = w.converge(&nodes, 0);
    assert!(
        matches!(
            p.commands[..],
            [Command::Promote {
                reason: Reason::NodeLost,
                ..
            }]
        ),
        "{p:?}"
    );
    assert_eq!(w.nodes_of("web"), vec![to]);
}

#[test]
fn crash_loops_are_refilled_elsewhere_forever_at_a_bounded_pace() {
    let mut w = World::new();
    w.service("web", 1, Spread::Soft);
    w.converge(&cluster(), 0);
    let mut moves = 0;
    let mut first_minute = 0;
    for second in 0..3_600u64 {
        let now_ms = second * 1_000;
        // Whatever node holds the slot reports it crash-looping (a payload bug).
        let a = w.ds.assignment("web", 0).unwrap();
        let mut nodes = cluster();
        let holder = nodes.iter_mut().find(|n| n.id == a.node).unwrap();
        holder
            .done
            .push(("web".into(), 0, a.epoch, DoneKind::CrashLoop));
        let p = w.converge(&nodes, now_ms);
        if second == 0 {
            let until_ms = w.config.refill.crashloop_delay_ms;
            assert_eq!(
                p.pending[0].reason,
                PendingReason::RefillBackoff { until_ms }
            );
        }
        if let [Command::Assign { node, reason, .. }] = p.commands[..] {
            assert_ne!(node, a.node, "a crash-loop move goes to another node");
            assert_ne!(node, WITNESS);
            assert_eq!(reason, Reason::CrashLoop);
            moves += 1;
            first_minute += u32::from(second < 60);
        }
    }
    // Never abandoned: after the backoff grows to its cap, about once a minute.
    assert!(moves >= 55, "{moves}");
    assert!(first_minute <= 4, "{first_minute}");
    assert_eq!(w.refill.tracker.refills("web", 0), moves);
}

#[test]
fn exited_slots_are_refilled_at_once_on_the_same_node_with_a_new_epoch() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    w.converge(&cluster(), 0);
    let old = w.ds.assignment("web", 1).unwrap();
    let mut nodes = cluster();
    let holder = nodes.iter_mut().find(|n| n.id == old.node).unwrap();
    holder
        .done
        .push(("web".into(), 1, old.epoch, DoneKind::Exited));
    let p = w.converge(&nodes, 10);
    assert!(
        matches!(p.commands[..], [Command::Assign { node, reason: Reason::Exited, .. }] if node == old.node),
        "{p:?}"
    );
    let new = w.ds.assignment("web", 1).unwrap();
    assert!(new.epoch > old.epoch);
    // The old done report is about a stale epoch now: nothing more.
    assert_eq!(w.plan(&nodes, 20), Plan::default());
}

#[test]
fn the_refill_budget_bounds_a_storm() {
    let mut w = World::new();
    w.config.refill.exit_delay_ms = 0;
    w.service("web", 40, Spread::Soft);
    w.converge(&cluster(), 0);
    w.converge(&cluster(), 0);
    assert_eq!(w.ds.assignments().count(), 40);
    // Every cell exits at once, every second, for a minute.
    let mut refills = 0;
    for second in 1..=60u64 {
        let mut nodes = cluster();
        for (slot, a) in w.ds.assignments_of("web").collect::<Vec<_>>() {
            let holder = nodes.iter_mut().find(|n| n.id == a.node).unwrap();
            holder
                .done
                .push(("web".into(), slot, a.epoch, DoneKind::Exited));
        }
        let p = w.converge(&nodes, second * 1_000);
        refills += p.commands.len() as u32;
        if second == 1 {
            assert!(p
                .pending
                .iter()
                .any(|p| p.reason == PendingReason::RefillBudget));
        }
    }
    let policy = &w.config.refill;
    assert!(
        refills <= policy.budget_per_minute + policy.budget_burst,
        "{refills}"
    );
    assert!(refills >= policy.budget_per_minute, "{refills}");
}

#[test]
fn done_on_a_stale_epoch_is_ignored() {
    let mut w = World::new();
    w.service("web", 1, Spread::Soft);
    w.converge(&cluster(), 0);
    let mut nodes = cluster();
    nodes[0]
        .done
        .push(("web".into(), 0, 0, DoneKind::CrashLoop));
    assert_eq!(w.plan(&nodes, 100_000), Plan::default());
    assert!(w.refill.tracker.is_empty());
}

#[test]
fn fenced_slots_unbind_first_and_bind_only_when_cleared() {
    let mut w = World::new();
    w.fenced("lock", 1);
    w.converge(&cluster(), 0);
    let held = w.ds.assignment("lock", 0).unwrap();
    // Its node dies: the slot is unbound (a tombstone remembers the holder), not moved.
    let mut nodes = cluster();
    nodes.iter_mut().find(|n| n.id == held.node).unwrap().alive = false;
    w.gate = false;
    let p = w.converge(&nodes, 10);
    assert!(
        matches!(
            p.commands[..],
            [Command::Unassign {
                reason: Reason::NodeLost,
                ..
            }]
        ),
        "{p:?}"
    );
    assert_eq!(w.ds.assignment("lock", 0), None);
    assert_eq!(w.ds.vacated("lock", 0).unwrap().node, held.node);
    // Not cleared yet: it waits, and says so (not as a degradation).
    let p = w.plan(&nodes, 20);
    assert!(p.commands.is_empty());
    assert_eq!(p.pending[0].reason, PendingReason::FenceWait);
    assert!(!p.pending[0].reason.is_degraded());
    // Cleared: bound again, elsewhere, with a fresh epoch; the tombstone goes.
    w.gate = true;
    let p = w.converge(&nodes, 30);
    assert!(matches!(
        p.commands[..],
        [Command::Assign {
            reason: Reason::Place,
            ..
        }]
    ));
    let now = w.ds.assignment("lock", 0).unwrap();
    assert!(now.node != held.node && now.epoch > held.epoch);
    assert_eq!(w.ds.vacated("lock", 0), None);
    // And apply refuses a one-step move of a fenced slot, whoever proposes it.
    let other = if now.node == W1 { W2 } else { W1 };
    assert_eq!(
        w.apply(&assign("lock", 0, other, now.epoch + 1)),
        Err(ApplyError::FencedSlotBound { current: now.epoch })
    );
}

#[test]
fn fenced_drain_waits_for_somewhere_to_go() {
    let mut w = World::new();
    w.fenced("lock", 1);
    w.converge(&cluster(), 0);
    let held = w.ds.assignment("lock", 0).unwrap();
    let other = if held.node == W1 { W2 } else { W1 };
    w.apply(&Command::SetDraining {
        node: held.node,
        draining: true,
    })
    .unwrap();
    let mut nodes = cluster();
    nodes.iter_mut().find(|n| n.id == other).unwrap().alive = false;
    let p = w.plan(&nodes, 10);
    assert!(
        p.commands.is_empty(),
        "nowhere to go: the cell keeps running"
    );
    assert_eq!(
        p.pending[0].reason,
        PendingReason::DrainBlocked { node: held.node }
    );
    let p = w.converge(&cluster(), 20);
    assert!(matches!(
        p.commands[..],
        [Command::Unassign {
            reason: Reason::Drain,
            ..
        }]
    ));
}

#[test]
fn a_done_fenced_cell_is_unbound_and_charged_to_the_budget() {
    let mut w = World::new();
    w.fenced("lock", 1);
    w.converge(&cluster(), 0);
    let held = w.ds.assignment("lock", 0).unwrap();
    let mut nodes = cluster();
    let holder = nodes.iter_mut().find(|n| n.id == held.node).unwrap();
    holder
        .done
        .push(("lock".into(), 0, held.epoch, DoneKind::Exited));
    let p = w.converge(&nodes, 10);
    assert!(matches!(
        p.commands[..],
        [Command::Unassign {
            reason: Reason::Exited,
            ..
        }]
    ));
    assert_eq!(w.refill.tracker.refills("lock", 0), 1);
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
fn view_from_report_carries_done_cells() {
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
        cpu_pct: 0,
        listening: false,
    };
    let report = NodeReport::new(
        W1,
        1,
        250,
        512,
        9,
        vec![
            cell(CellState::CrashLoop),
            cell(CellState::Running),
            cell(CellState::Exited),
            cell(CellState::Backoff),
        ],
    );
    let v = NodeView::from_report(&report, NodeRole::Worker, true, false);
    assert_eq!((v.id, v.load_milli, v.free_mib, v.cells), (W1, 250, 512, 4));
    assert_eq!(
        v.done,
        vec![
            ("web".to_string(), 0, 4, DoneKind::CrashLoop),
            ("web".to_string(), 0, 4, DoneKind::Exited)
        ]
    );
}

#[test]
fn a_failed_move_still_occupies_its_node_for_spread() {
    // Slot 0 crash-loops on W2 and cannot move (W1 is dead); slot 1 is lost with W1. Under hard
    // spread slot 1 must not land on W2, which still runs slot 0.
    let mut w = World::new();
    w.config.refill.crashloop_delay_ms = 0;
    w.service("web", 2, Spread::Hard);
    w.apply(&assign("web", 0, W2, 1)).unwrap();
    w.apply(&assign("web", 1, W1, 2)).unwrap();
    let mut nodes = cluster();
    nodes[0].alive = false;
    nodes[1]
        .done
        .push(("web".into(), 0, 1, DoneKind::CrashLoop));
    let p = w.plan(&nodes, 0);
    assert!(p.commands.is_empty(), "{p:?}");
    let reasons: Vec<_> = p.pending.iter().map(|p| p.reason.clone()).collect();
    assert_eq!(
        reasons,
        vec![
            PendingReason::RefillNoTarget,
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

#[test]
fn a_slot_that_crash_looped_everywhere_still_gets_a_node() {
    // A fenced slot released after crash loops on both workers: its avoid list holds every
    // candidate, yet it is placed (the backoff sets the pace, not the avoid list).
    let mut w = World::new();
    w.config.refill.crashloop_delay_ms = 0;
    w.fenced("lock", 1);
    w.converge(&cluster(), 0);
    for round in 0..2u64 {
        let a = w.ds.assignment("lock", 0).unwrap();
        let mut nodes = cluster();
        let holder = nodes.iter_mut().find(|n| n.id == a.node).unwrap();
        holder
            .done
            .push(("lock".into(), 0, a.epoch, DoneKind::CrashLoop));
        let p = w.converge(&nodes, 10_000 * (round + 1));
        assert!(
            matches!(p.commands[..], [Command::Unassign { .. }]),
            "{p:?}"
        );
        let p = w.converge(&cluster(), 10_000 * (round + 1) + 1);
        assert!(
            matches!(p.commands[..], [Command::Assign { .. }]),
            "round {round}: {p:?}"
        );
    }
    assert_eq!(w.refill.tracker.avoid("lock", 0).len(), 2);
}

/// The cluster with every binding's and replacement's cell reported running for `uptime_s`,
/// each using `cpu_pct` of a CPU.
fn cluster_running(w: &World, uptime_s: u32, cpu_pct: u8) -> Vec<NodeView> {
    let mut nodes = cluster();
    let cells =
        w.ds.assignments()
            .map(|(s, slot, a)| (s, slot, a.node, a.epoch))
            .chain(w.ds.surges().map(|(s, slot, x)| (s, slot, x.node, x.epoch)));
    for (service, slot, node, epoch) in cells {
        let mut cell = seen(service, slot, epoch, CellState::Running, uptime_s);
        cell.cpu_pct = cpu_pct;
        nodes
            .iter_mut()
            .find(|v| v.id == node)
            .unwrap()
            .reported
            .push(cell);
    }
    nodes
}

fn new_version(w: &mut World, arg: &str) -> u32 {
    let mut spec = w.ds.service("web").unwrap().clone();
    spec.args = vec![arg.to_string()];
    match w.apply(&Command::ApplyService(spec)).unwrap() {
        crate::desired::Applied::RolloutStarted { generation } => generation,
        other => panic!("{other:?}"),
    }
}

/// Bound slots of `web` plus replacements, and how many run `generation`.
fn serving(w: &World, generation: u32) -> (usize, usize) {
    let ops = w.ds.ops("web").unwrap();
    let bound = w.ds.assignments_of("web").count();
    let at = ops.slot_gen.values().filter(|g| **g == generation).count();
    (bound, at)
}

#[test]
fn a_rollout_replaces_one_slot_at_a_time_and_never_runs_fewer() {
    let mut w = World::new();
    w.service("web", 3, Spread::Soft);
    w.converge(&cluster(), 0);
    let generation = new_version(&mut w, "v2");
    let mut surges_seen = 0;
    for round in 0..20 {
        // Not ready: a replacement starts, nothing else moves.
        let p = w.converge(&cluster_running(&w, 0, 0), 0);
        surges_seen += p
            .commands
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::Surge {
                        reason: Reason::Rollout,
                        ..
                    }
                )
            })
            .count();
        assert!(w.ds.surges().count() <= 1, "surge 1, round {round}");
        assert_eq!(serving(&w, generation).0, 3, "none unavailable");
        // Ready: promoted (the old cell is then stale and stopped by its node), and the next
        // slot's replacement starts in the same round.
        let p = w.converge(&cluster_running(&w, 1, 0), 0);
        surges_seen += p
            .commands
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::Surge {
                        reason: Reason::Rollout,
                        ..
                    }
                )
            })
            .count();
        assert!(w.ds.surges().count() <= 1, "surge 1, round {round}");
        assert_eq!(serving(&w, generation).0, 3);
        if serving(&w, generation).1 == 3 {
            break;
        }
    }
    assert_eq!(serving(&w, generation), (3, 3));
    assert_eq!(surges_seen, 3);
    assert_eq!(w.ds.surges().count(), 0);
    assert_eq!(w.plan(&cluster_running(&w, 9, 0), 0), Plan::default());
    // The cells now run the new args.
    assert_eq!(
        w.ds.version("web", generation).unwrap().1,
        ["v2".to_string()]
    );
}

#[test]
fn a_crash_looping_version_rolls_back_by_itself() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    w.converge(&cluster(), 0);
    let good = w.ds.ops("web").unwrap().current;
    let bad = new_version(&mut w, "crash");
    w.converge(&cluster_running(&w, 0, 0), 0);
    let (_, slot, surge) = w.ds.surges().next().unwrap();
    // The replacement restarts twice: the new generation has failed.
    let mut nodes = cluster_running(&w, 0, 0);
    for v in &mut nodes {
        for c in &mut v.reported {
            if c.epoch == surge.epoch {
                c.restarts = 2;
                c.state = CellState::Backoff;
            }
        }
    }
    let p = w.converge(&nodes, 0);
    assert_eq!(
        p.commands,
        vec![Command::Rollback {
            service: "web".into(),
            generation: bad
        }]
    );
    let ops = w.ds.ops("web").unwrap();
    assert_eq!((ops.current, ops.rolled_back_from), (good, Some(bad)));
    assert!(ops.surges.is_empty() && ops.outdated().next().is_none());
    assert!(w.ds.service("web").unwrap().args.is_empty());
    assert_eq!(w.ds.surge("web", slot), None);
    assert_eq!(w.plan(&cluster_running(&w, 5, 0), 0), Plan::default());
    // `rollout undo` goes forward to the bad version again, on purpose; a second undo back.
    w.apply(&Command::RolloutUndo {
        service: "web".into(),
    })
    .unwrap();
    assert_eq!(w.ds.ops("web").unwrap().current, bad);
    w.apply(&Command::RolloutUndo {
        service: "web".into(),
    })
    .unwrap();
    assert_eq!(w.ds.ops("web").unwrap().current, good);
}

#[test]
fn a_new_leader_resumes_a_rollout_and_a_drain_where_they_were() {
    let mut w = World::new();
    w.service("web", 2, Spread::Soft);
    w.converge(&cluster(), 0);
    let generation = new_version(&mut w, "v2");
    w.converge(&cluster_running(&w, 0, 0), 0);
    assert_eq!(w.ds.surges().count(), 1);
    // Leadership changes: the new leader has no memory, only the desired state.
    w.refill = Refill::new(&w.config, 60_000);
    let p = w.plan(&cluster_running(&w, 0, 0), 60_000);
    assert!(p.commands.is_empty(), "the replacement is not ready: {p:?}");
    for _ in 0..4 {
        w.converge(&cluster_running(&w, 1, 0), 60_000);
        w.refill = Refill::new(&w.config, 61_000);
        w.converge(&cluster_running(&w, 0, 0), 61_000);
    }
    assert_eq!(serving(&w, generation), (2, 2));
    // The same for a drain.
    w.apply(&Command::SetDraining {
        node: W1,
        draining: true,
    })
    .unwrap();
    w.converge(&cluster_running(&w, 0, 0), 62_000);
    w.refill = Refill::new(&w.config, 63_000);
    w.converge(&cluster_running(&w, 1, 0), 63_000);
    assert_eq!(w.nodes_of("web"), vec![W2, W2]);
    assert_eq!(w.ds.maintenance(W1), Maintenance::Drained);
}

#[test]
fn autoscale_commits_the_count_and_the_placement_in_one_entry() {
    let mut w = World::new();
    let mut spec = ServiceSpec::new("web", "echo", 1);
    spec.min_replicas = 1;
    spec.max_replicas = 4;
    w.apply(&Command::ApplyService(spec)).unwrap();
    w.apply(&Command::SetAutoscale {
        service: "web".into(),
        policy: Some(crate::operate::AutoscalePolicy {
            target_load_pct: 30,
        }),
    })
    .unwrap();
    w.converge(&cluster(), 0);
    // Busy replicas (each at 90 %): one entry per step, count and nodes together.
    let mut counts = vec![1u16];
    for t in (0..30_000).step_by(100) {
        let p = w.converge(&cluster_running(&w, 5, 90), t);
        for c in &p.commands {
            let Command::AutoScale {
                from, to, place, ..
            } = c
            else {
                panic!("only scale entries: {c:?}");
            };
            assert_eq!(place.len(), usize::from(to - from));
            counts.push(*to);
        }
        assert_eq!(
            w.ds.assignments_of("web").count(),
            usize::from(w.ds.service("web").unwrap().replicas),
            "placed in the same entry"
        );
    }
    assert_eq!(counts, [1, 3, 4]);
    // Idle: back to min after the stable window and the cooldown, in one step, and stays.
    for t in (30_000..80_000).step_by(100) {
        let p = w.converge(&cluster_running(&w, 5, 0), t);
        for c in &p.commands {
            let Command::AutoScale { to, .. } = c else {
                panic!("only scale entries: {c:?}");
            };
            counts.push(*to);
        }
    }
    assert_eq!(counts, [1, 3, 4, 1]);
    assert_eq!(w.nodes_of("web").len(), 1);
}

#[test]
fn autoscale_and_operate_inputs_are_checked() {
    let mut w = World::new();
    w.service("web", 1, Spread::Soft);
    let set = |pct| Command::SetAutoscale {
        service: "web".into(),
        policy: Some(crate::operate::AutoscalePolicy {
            target_load_pct: pct,
        }),
    };
    let op = |e| Err(ApplyError::Operate(e));
    // min 0: nothing to measure.
    assert_eq!(w.apply(&set(50)), op(OperateError::AutoscaleMinZero));
    let mut spec = w.ds.service("web").unwrap().clone();
    spec.min_replicas = 1;
    w.apply(&Command::ApplyService(spec)).unwrap();
    for pct in [0, 4, 91, 255] {
        assert_eq!(
            w.apply(&set(pct)),
            op(OperateError::TargetOutOfRange { pct })
        );
    }
    assert!(w.apply(&set(5)).is_ok() && w.apply(&set(90)).is_ok());
    // A stale or malformed scale entry changes nothing.
    let before = w.ds.clone();
    let scale = |from, to, place: Vec<(Slot, NodeId, Epoch)>| Command::AutoScale {
        service: "web".into(),
        from,
        to,
        load_milli: 0,
        place,
    };
    let high = w.ds.epoch_high();
    assert_eq!(
        w.apply(&scale(2, 3, vec![])),
        op(OperateError::StaleScale {
            from: 2,
            current: 1
        })
    );
    assert_eq!(
        w.apply(&scale(1, 3, vec![(1, W1, high + 1)])),
        op(OperateError::BadScalePlacement)
    );
    assert!(matches!(
        w.apply(&scale(1, 2, vec![(1, W1, high)])),
        Err(ApplyError::StaleEpoch { .. })
    ));
    assert_eq!(
        w.ds.services().collect::<Vec<_>>(),
        before.services().collect::<Vec<_>>()
    );
    assert_eq!(w.ds.epoch_high(), before.epoch_high());
    // Undo without a previous version; surges of unbound slots.
    assert_eq!(
        w.apply(&Command::RolloutUndo {
            service: "web".into()
        }),
        op(OperateError::NothingToUndo)
    );
    assert_eq!(
        w.apply(&Command::Surge {
            service: "web".into(),
            slot: 0,
            node: W1,
            epoch: high + 1,
            generation: 1,
            reason: Reason::Rollout,
        }),
        Err(ApplyError::NotAssigned)
    );
}

#[test]
fn a_hard_spread_service_rolls_on_a_full_cluster() {
    let mut w = World::new();
    w.service("web", 2, Spread::Hard);
    w.converge(&cluster(), 0);
    assert_eq!(w.nodes_of("web"), vec![W1, W2]);
    let generation = new_version(&mut w, "v2");
    for _ in 0..6 {
        w.converge(&cluster_running(&w, 0, 0), 0);
        w.converge(&cluster_running(&w, 1, 0), 0);
    }
    assert_eq!(serving(&w, generation), (2, 2));
    let mut nodes = w.nodes_of("web");
    nodes.sort_unstable();
    assert_eq!(nodes, vec![W1, W2], "still one per node");
}
