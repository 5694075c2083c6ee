//! The control loop: the one consumer of the ordered event queue.
//!
//! Every event — task exits, memory pressure, ticks, and (as they land) membership
//! verdicts, Raft commits and shell requests — is taken here in order and handed to the
//! component that reacts to it. For now it keeps per-kind counts and notices gaps in the
//! sequence numbers (events lost to queue overflow), which `events` reports.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::events::{self, EventKind};

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
        EventKind::Tick { .. } | EventKind::Boot { .. } | EventKind::Poweroff => {}
        EventKind::TaskExit { .. } | EventKind::MemoryLow { .. } | EventKind::MemoryOk { .. } => {}
    }
}

/// (events consumed, events the reactor saw it missed).
pub fn counters() -> (u64, u64) {
    (CONSUMED.load(Ordering::Relaxed), MISSED.load(Ordering::Relaxed))
}
