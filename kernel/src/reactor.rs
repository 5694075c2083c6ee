//! The control loop: the one consumer of the ordered event queue.
//!
//! Every event is taken here in order and handed to the component that reacts to it: a tick
//! drives SWIM, Raft (queued for the `raft` task, which owns the disk), the control plane
//! and the cell manager's timers, in that order; a transport message goes to its kind's
//! consumer; `RaftApply` applies committed entries; a membership verdict replans and
//! reconciles; a task exit goes to the cell manager. It also counts what it consumed and
//! notices gaps in the sequence numbers (events lost to queue overflow), which `events`
//! reports. Neighbours: `events` (the queue), `cluster::*`, `cells`; docs/architecture.md.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::events::{self, EventKind};
use crate::{cells, cluster};

static CONSUMED: AtomicU64 = AtomicU64::new(0);
static MISSED: AtomicU64 = AtomicU64::new(0);
/// Test hook: while set, the reactor consumes nothing (so a test can fill the queue).
#[cfg(feature = "ktest")]
pub static PAUSED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Runs the loop forever (the `reactor` task).
pub fn run() {
    let mut expected_seq = None;
    loop {
        #[cfg(feature = "ktest")]
        while PAUSED.load(Ordering::Acquire) {
            crate::sched::sleep_ms(1);
        }
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
        EventKind::RaftApply => cluster::consensus::apply_pending(),
        EventKind::NodeUp { .. }
        | EventKind::NodeDown { .. }
        | EventKind::NodeLeft { .. }
        | EventKind::NodeAlive { .. } => {
            cluster::control::on_membership_change();
        }
        // Withheld verdicts come out as node_down events of their own once due.
        EventKind::NodeSuspect { .. }
        | EventKind::SelfSuspect { .. }
        | EventKind::SelfTrusted { .. }
        | EventKind::RaftRole { .. }
        | EventKind::RaftRecovery { .. }
        | EventKind::RaftCompact { .. }
        | EventKind::RaftSnapshot { .. }
        | EventKind::RaftStore { .. } => {}
        EventKind::XylemCommit { .. }
        | EventKind::XylemAction { .. }
        | EventKind::LeaseExpired { .. } => {}
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
