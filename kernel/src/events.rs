//! The ordered kernel event queue (DESIGN.md "Event flow").
//!
//! Producers — the scheduler (task exits), fault handlers, the frame allocator (memory
//! pressure), the timer, and later membership and Raft — call [`push`] from any context,
//! interrupt handlers included. Each event gets a sequence number and a timestamp, is
//! written as one line to COM2 (`t_us=… node=… kind=… key=value…`, the machine-readable log
//! xtask parses), and is queued for the control loop, which drains it with [`next`]. The
//! queue is bounded: overflow is counted, shown by `events`, and visible to the consumer as
//! a gap in sequence numbers. Periodic `tick` events drive protocol timers and are the one
//! kind not written to COM2 (ten a second would drown the log); they are still counted.

use alloc::vec::Vec;
use core::fmt;
use kcore::event_ring::{EventRing, Numbered};
use kcore::short_str::ShortStr;
use spin::{Mutex, Once};

use crate::arch::cpu::without_interrupts;
use crate::arch::serial::{self, Line};
use crate::sched::wait::WaitQueue;
use crate::{node, time};

/// Events the consumer has not taken yet, at most.
const PENDING_CAP: usize = 1024;
/// Events remembered for `events [N]`.
const HISTORY_CAP: usize = 256;

/// A task name inside an event (inline: pushing an event never allocates).
pub type TaskName = ShortStr<24>;

/// Why a task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// It returned or called exit, with this code.
    Exited(i64),
    /// A CPU exception in ring 3 ended it.
    Faulted { vector: u8, addr: u64, rip: u64 },
    /// Someone killed it.
    Killed,
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "exited code={code}"),
            ExitReason::Faulted { vector, addr, rip } => write!(f, "faulted vector={vector} addr={addr:#x} rip={rip:#x}"),
            ExitReason::Killed => write!(f, "killed"),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The node finished booting.
    Boot { id: u64, role: &'static str, frames_kib: u64, heap_kib: u64, tsc_mhz: u64 },
    /// A task ended (the scheduler's ground truth).
    TaskExit { task: u64, name: TaskName, reason: ExitReason, cpu_ticks: u64 },
    /// Free frames fell below the low watermark.
    MemoryLow { free_frames: u64 },
    /// Free frames climbed back above the high watermark.
    MemoryOk { free_frames: u64 },
    /// A periodic timer tick for protocol timers (not written to COM2).
    Tick { ticks: u64 },
    /// The node is powering off.
    Poweroff,
}

impl EventKind {
    /// The `kind=` name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Boot { .. } => "boot",
            EventKind::TaskExit { .. } => "task_exit",
            EventKind::MemoryLow { .. } => "memory_low",
            EventKind::MemoryOk { .. } => "memory_ok",
            EventKind::Tick { .. } => "tick",
            EventKind::Poweroff => "poweroff",
        }
    }

    /// Whether the event goes to COM2.
    fn logged(&self) -> bool {
        !matches!(self, EventKind::Tick { .. })
    }
}

impl fmt::Display for EventKind {
    /// The `key=value` fields after `kind=`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Boot { id, role, frames_kib, heap_kib, tsc_mhz } => write!(
                f,
                "id={id} role={role} version={} frames_kib={frames_kib} heap_kib={heap_kib} tsc_mhz={tsc_mhz}",
                env!("CARGO_PKG_VERSION")
            ),
            EventKind::TaskExit { task, name, reason, cpu_ticks } => {
                write!(f, "task={task} name={name} reason={reason} cpu_ticks={cpu_ticks}")
            }
            EventKind::MemoryLow { free_frames } | EventKind::MemoryOk { free_frames } => {
                write!(f, "free_frames={free_frames}")
            }
            EventKind::Tick { ticks } => write!(f, "ticks={ticks}"),
            EventKind::Poweroff => write!(f, "reason=shell"),
        }
    }
}

/// An event as queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub t_us: u64,
    pub kind: EventKind,
}

static RING: Mutex<Option<EventRing<Event>>> = Mutex::new(None);
static CONSUMERS: Once<WaitQueue> = Once::new();

fn consumers() -> &'static WaitQueue {
    CONSUMERS.call_once(WaitQueue::new)
}

/// Queues an event, logs it to COM2 and wakes the consumer. Safe from any context; after
/// the first call it never allocates (the rings are preallocated, events are inline).
pub fn push(kind: EventKind) {
    let t_us = time::now_us();
    if kind.logged() {
        serial::write_fmt(
            Line::EventLog,
            format_args!("t_us={t_us} node={} kind={} {}\n", node::name(), kind.name(), kind),
        );
    }
    without_interrupts(|| {
        RING.lock().get_or_insert_with(|| EventRing::new(PENDING_CAP, HISTORY_CAP)).push(Event { t_us, kind });
    });
    consumers().wake_all();
}

/// Takes the next event, blocking until one arrives.
pub fn next() -> Numbered<Event> {
    let mut taken = None;
    consumers().wait_until(|| {
        taken = RING.lock().as_mut().and_then(EventRing::pop);
        taken.is_some()
    });
    taken.expect("wait_until returned without an event")
}

/// Counters for `events`: (offered, pending, overflowed).
pub fn counters() -> (u64, usize, u64) {
    without_interrupts(|| {
        RING.lock().as_ref().map_or((0, 0, 0), |r| (r.offered(), r.pending(), r.overflowed()))
    })
}

/// The last `n` events, oldest first.
pub fn recent(n: usize) -> Vec<Numbered<Event>> {
    without_interrupts(|| RING.lock().as_ref().map(|r| r.recent(n).cloned().collect()).unwrap_or_default())
}
