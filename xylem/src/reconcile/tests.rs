//! Host tests of the local reconcile: spawn/stop rules, fencing, quorum, idempotence.

use super::*;
use crate::command::Command;
use crate::service::{PayloadCatalog, ServiceSpec};
use alloc::string::ToString;
use alloc::vec;

const ME: NodeId = 1;
const OTHER: NodeId = 2;

fn state(commands: &[Command]) -> DesiredState {
    let mut ds = DesiredState::new(PayloadCatalog::new(&["echo"]));
    for (i, c) in commands.iter().enumerate() {
        ds.apply(i as u64 + 1, c).unwrap();
    }
    ds
}

fn web(replicas: u16) -> Command {
    let mut spec = ServiceSpec::new("web", "echo", replicas);
    spec.args = vec!["--port".to_string(), "80".to_string()];
    spec.memory_mib = 24;
    Command::ApplyService(spec)
}

fn assign(slot: Slot, node: NodeId, epoch: Epoch) -> Command {
    Command::Assign {
        service: "web".to_string(),
        slot,
        node,
        epoch,
        reason: crate::command::Reason::Place,
    }
}

fn cell(id: CellId, slot: Slot, epoch: Epoch, state: CellState) -> LocalCell {
    LocalCell {
        id,
        service: "web".to_string(),
        slot,
        epoch,
        state,
    }
}

/// Carries out actions the way the kernel would: spawns add a Starting cell, stops remove it.
fn execute(cells: &mut Vec<LocalCell>, actions: &[Action], next_id: &mut CellId) {
    for action in actions {
        match action {
            Action::Spawn {
                service,
                slot,
                epoch,
                ..
            } => {
                *next_id += 1;
                let state = CellState::Starting;
                cells.push(LocalCell {
                    id: *next_id,
                    service: service.clone(),
                    slot: *slot,
                    epoch: *epoch,
                    state,
                });
            }
            Action::Stop { cell_id, .. } => cells.retain(|c| c.id != *cell_id),
        }
    }
}

#[test]
fn spawns_what_is_assigned_to_me_only() {
    let ds = state(&[web(2), assign(0, ME, 1), assign(1, OTHER, 2)]);
    let plan = reconcile(&ds, ME, &[], true);
    let spawn = Action::Spawn {
        service: "web".to_string(),
        slot: 0,
        epoch: 1,
        payload: "echo".to_string(),
        args: vec!["--port".to_string(), "80".to_string()],
        restart: RestartPolicy::OnFailure,
        memory_mib: 24,
    };
    assert_eq!(plan.actions, vec![spawn]);
}

#[test]
fn stale_epochs_are_fenced_and_stopped_before_spawns() {
    // Slot 0 moved away from me (epoch 3 on OTHER); slot 1 moved to me at epoch 4.
    let ds = state(&[
        web(2),
        assign(0, ME, 1),
        assign(1, OTHER, 2),
        assign(0, OTHER, 3),
        assign(1, ME, 4),
    ]);
    let cells = [
        cell(7, 0, 1, CellState::Running),
        cell(8, 1, 2, CellState::Running),
    ];
    let plan = reconcile(&ds, ME, &cells, true);
    assert_eq!(plan.actions.len(), 3);
    assert_eq!(
        plan.actions[0],
        Action::Stop {
            cell_id: 7,
            why: StopReason::Fenced { current: 3 }
        }
    );
    assert_eq!(
        plan.actions[1],
        Action::Stop {
            cell_id: 8,
            why: StopReason::Fenced { current: 4 }
        }
    );
    assert!(matches!(
        plan.actions[2],
        Action::Spawn {
            slot: 1,
            epoch: 4,
            ..
        }
    ));
}

#[test]
fn unassigned_and_deleted_cells_are_stopped() {
    let ds = state(&[web(1), assign(0, ME, 1)]);
    let cells = [
        cell(1, 0, 1, CellState::Running),
        cell(2, 5, 1, CellState::Exited),
    ];
    let plan = reconcile(&ds, ME, &cells, true);
    assert_eq!(
        plan.actions,
        vec![Action::Stop {
            cell_id: 2,
            why: StopReason::Unassigned
        }]
    );
    let ds = state(&[
        web(1),
        assign(0, ME, 1),
        Command::Delete {
            name: "web".to_string(),
        },
    ]);
    let plan = reconcile(&ds, ME, &cells, true);
    assert_eq!(plan.actions.len(), 2);
    assert!(plan.actions.iter().all(|a| matches!(
        a,
        Action::Stop {
            why: StopReason::Unassigned,
            ..
        }
    )));
}

#[test]
fn duplicates_keep_the_lowest_cell_id() {
    let ds = state(&[web(1), assign(0, ME, 1)]);
    let cells = [
        cell(9, 0, 1, CellState::Running),
        cell(3, 0, 1, CellState::Running),
    ];
    let plan = reconcile(&ds, ME, &cells, true);
    assert_eq!(
        plan.actions,
        vec![Action::Stop {
            cell_id: 9,
            why: StopReason::Duplicate
        }]
    );
}

#[test]
fn a_cell_of_the_current_epoch_in_any_state_blocks_respawn() {
    let ds = state(&[web(1), assign(0, ME, 1)]);
    for s in [
        CellState::Starting,
        CellState::Running,
        CellState::Backoff,
        CellState::CrashLoop,
        CellState::Exited,
    ] {
        assert_eq!(
            reconcile(&ds, ME, &[cell(1, 0, 1, s)], true),
            LocalPlan::default(),
            "{s:?}"
        );
    }
    // A stopping cell is on its way out: a fresh one is spawned, and it is not stopped again.
    let plan = reconcile(&ds, ME, &[cell(1, 0, 1, CellState::Stopping)], true);
    assert!(matches!(plan.actions[..], [Action::Spawn { .. }]));
}

#[test]
fn no_quorum_keeps_running_and_withholds_everything() {
    let ds = state(&[
        web(2),
        assign(0, ME, 1),
        assign(1, ME, 2),
        assign(0, OTHER, 3),
    ]);
    let cells = [cell(1, 0, 1, CellState::Running)];
    let plan = reconcile(&ds, ME, &cells, false);
    assert!(plan.actions.is_empty());
    assert_eq!((plan.withheld_spawns, plan.withheld_stops), (1, 1));
    let plan = reconcile(&ds, ME, &cells, true);
    assert!(matches!(plan.actions[0], Action::Stop { cell_id: 1, .. }));
    assert!(matches!(plan.actions[1], Action::Spawn { slot: 1, .. }));
}

#[test]
fn level_triggered_second_run_is_empty() {
    let ds = state(&[
        web(3),
        assign(0, ME, 1),
        assign(1, ME, 2),
        assign(2, OTHER, 3),
        Command::ApplyService(ServiceSpec::new("db", "echo", 1)),
        Command::Assign {
            service: "db".to_string(),
            slot: 0,
            node: ME,
            epoch: 4,
            reason: crate::command::Reason::Place,
        },
    ]);
    let mut cells = vec![
        cell(1, 1, 1, CellState::Running),
        cell(2, 2, 3, CellState::CrashLoop),
    ];
    let mut next_id = 10;
    let first = reconcile(&ds, ME, &cells, true);
    assert_eq!(first.actions.len(), 5);
    execute(&mut cells, &first.actions, &mut next_id);
    assert_eq!(reconcile(&ds, ME, &cells, true), LocalPlan::default());
    assert_eq!(cells.len(), 3);
}

#[test]
fn deterministic_regardless_of_table_order() {
    let ds = state(&[web(2), assign(0, OTHER, 1), assign(1, ME, 2)]);
    let mut cells = vec![
        cell(5, 0, 1, CellState::Running),
        cell(2, 1, 2, CellState::Running),
        cell(4, 1, 2, CellState::Running),
        cell(3, 1, 1, CellState::Exited),
    ];
    let forward = reconcile(&ds, ME, &cells, true);
    cells.reverse();
    assert_eq!(reconcile(&ds, ME, &cells, true), forward);
    let stopped: Vec<CellId> = forward
        .actions
        .iter()
        .map(|a| match a {
            Action::Stop { cell_id, .. } => *cell_id,
            Action::Spawn { .. } => panic!("nothing to spawn"),
        })
        .collect();
    assert_eq!(stopped, vec![3, 4, 5]);
}
