//! The control loop: the one consumer of the ordered event queue.
//!
//! Every event — task exits, memory pressure, ticks, and (as they land) membership
//! verdicts, Raft commits and shell requests — is taken here in order and handed to the
//! component that reacts to it. For now it keeps per-kind counts and notices gaps in the
//! sequence numbers (events lost to queue overflow), which `events` reports.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::events::{self, EventKind};
use crate::{cells, cluster};

static CONSUMED: AtomicU64 = AtomicU64::new(0);
static MISSED: AtomicU64 = AtomicU64::new(0);

/// Runs the loop forever (the `reactor` task).
pub fn run() {
    let mut expected_seq = None;
    loop {
        let numbered = events::next();
        if let Some(expected) = expected_seq {
            if numbered.seq > expected {
                MISSED.fetch_add(numbered.seq - expected, Ordering::Relaxed);
            }
        }
        expected_seq = Some(numbered.seq + 1);
        CONSUMED.fetch_add(1, Ordering::Relaxed);
        on_event(&numbered.event.kind);
    }
}

fn on_event(kind: &EventKind) {
    match kind {
        EventKind::TaskExit {
            task,
            reason,
            cpu_ticks,
            ..
        } => cells::on_task_exit(*task, reason, *cpu_ticks),
        EventKind::Tick { .. } => {
            cluster::membership::on_tick();
            cluster::consensus::on_tick();
            cluster::control::on_tick();
            cells::on_tick();
        }
        EventKind::Message { kind, .. } => crate::netstack::transport::deliver(*kind),
        EventKind::NodeUp { .. }
        | EventKind::NodeDown { .. }
        | EventKind::NodeLeft { .. }
        | EventKind::NodeAlive { .. } => {
            cluster::control::on_membership_change();
        }
        // Withheld verdicts come out as node_down events of their own once due.
        EventKind::NodeSuspect { .. }
        | EventKind::SelfSuspect { .. }
        | EventKind::SelfTrusted { .. } => {}
        EventKind::RaftRole { .. } | EventKind::RaftRecovery { .. } => {}
        EventKind::XylemCommit { .. } | EventKind::XylemAction { .. } => {}
        EventKind::Boot { .. }
        | EventKind::Poweroff
        | EventKind::MemoryLow { .. }
        | EventKind::MemoryOk { .. } => {}
        EventKind::CellStart { .. }
        | EventKind::CellExit { .. }
        | EventKind::CellRestart { .. }
        | EventKind::CellCrashLoop { .. } => {}
    }
}

/// (events consumed, events the reactor saw it missed).
pub fn counters() -> (u64, u64) {
    (
        CONSUMED.load(Ordering::Relaxed),
        MISSED.load(Ordering::Relaxed),
    )
}
