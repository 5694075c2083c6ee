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
//!
//! COM2 lines are written by their own task once it runs ([`start_writer`]): [`push`] only
//! formats the line into a bounded queue (`arch::serial::queue_event_line`), in order, so a
//! producer never waits for the emulated UART (~1 µs per byte under TCG: starting a cell
//! paid ~100 µs for its `cell_start` line). The writer (normal priority, so a busy cell never
//! starves it) waits [`WRITER_DELAY_MS`] after being woken, so whatever woke it finishes first
//! (a cell starting gets to ring 3 before the previous cell's exit lines are written), then
//! drains the queue in 128-byte chunks; lines
//! that did not fit are counted and reported by a `log_dropped lines=N` line once there is
//! room. Panic, exit and poweroff write what is queued before they go.

use alloc::vec::Vec;
use core::fmt;
use kcore::event_ring::{EventRing, Numbered};
use kcore::short_str::ShortStr;
use spin::Mutex;

use crate::arch::cpu::without_interrupts;
use crate::arch::serial;
use crate::sched::wait::WaitQueue;
use crate::{node, time};

/// Events the consumer has not taken yet, at most.
pub const PENDING_CAP: usize = 1024;
/// Events remembered for `events [N]`.
const HISTORY_CAP: usize = 256;

/// How a cell's incarnation ended (the cell crate's view, with LoadFailed).
pub type CellExitReason = ::cell::lifecycle::ExitReason;

/// A task name inside an event (inline: pushing an event never allocates).
pub type TaskName = ShortStr<24>;

/// A cell's cluster-wide name inside an event, `service/slot@epoch` (`xylem::name::CellName`),
/// for cells that serve a slot. 56 bytes hold a 32-byte service name, slot and a 20-digit epoch.
pub type CellLabel = ShortStr<56>;

/// ` name=web/1@7` when the cell serves a slot, nothing otherwise.
struct NameField<'a>(&'a Option<CellLabel>);

impl fmt::Display for NameField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(label) => write!(f, " name={label}"),
            None => Ok(()),
        }
    }
}

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
            ExitReason::Faulted { vector, addr, rip } => {
                write!(f, "faulted vector={vector} addr={addr:#x} rip={rip:#x}")
            }
            ExitReason::Killed => write!(f, "killed"),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The node finished booting.
    Boot {
        id: u64,
        role: &'static str,
        frames_kib: u64,
        heap_kib: u64,
        tsc_mhz: u64,
        /// Worst-case rate error of the clock calibration, in ppm.
        tsc_err_ppm: u64,
        /// This boot's random id (crash records name the boot that panicked with it).
        boot_id: u64,
    },
    /// A task ended (the scheduler's ground truth).
    TaskExit {
        task: u64,
        name: TaskName,
        reason: ExitReason,
        cpu_ticks: u64,
    },
    /// Free frames fell below the low watermark.
    MemoryLow { free_frames: u64 },
    /// Free frames climbed back above the high watermark.
    MemoryOk { free_frames: u64 },
    /// A periodic timer tick for protocol timers (not written to COM2).
    Tick { ticks: u64 },
    /// A cell entered ring 3.
    CellStart {
        cell: u64,
        task: u64,
        payload: TaskName,
        name: Option<CellLabel>,
    },
    /// A cell's incarnation ended.
    CellExit {
        cell: u64,
        reason: CellExitReason,
        restarts: u32,
        name: Option<CellLabel>,
    },
    /// Supervision will restart a cell after a backoff.
    CellRestart {
        cell: u64,
        attempt: u32,
        delay_ms: u64,
        name: Option<CellLabel>,
    },
    /// A cell failed too often too fast; it stays down until reset.
    CellCrashLoop {
        cell: u64,
        failures: u64,
        name: Option<CellLabel>,
    },
    /// Membership: a peer joined or came back (SWIM).
    NodeUp { peer: u64 },
    /// Membership: a peer stopped answering probes and is suspected.
    NodeSuspect { peer: u64, incarnation: u64 },
    /// Membership: a suspected peer refuted the suspicion.
    NodeAlive { peer: u64, incarnation: u64 },
    /// Membership: a peer is declared dead (by our own suspicion timeout, or reported).
    NodeDown { peer: u64, reporter: Option<u64> },
    /// Membership: a peer left gracefully.
    NodeLeft { peer: u64 },
    /// Membership: this node ran `late_ms` behind its own timers (its VM was not scheduled)
    /// and withholds its own verdicts until `self_trusted`.
    SelfSuspect { late_ms: u64 },
    /// Membership: the self-suspicion window passed on time; this node's verdicts count again
    /// (`withheld`: own verdicts withheld while distrusted, since boot).
    SelfTrusted { withheld: u64 },
    /// Raft: this node's view of role, term or leader changed.
    RaftRole {
        role: &'static str,
        term: u64,
        leader: u64,
        /// What caused it: election_timeout, check_quorum, newer_term or message.
        why: &'static str,
    },
    /// Raft: the store was recovered at boot (`device` "disk" or "ram"; `clean` false when
    /// recovery stopped at a torn or corrupt record).
    RaftRecovery {
        device: &'static str,
        generation: u64,
        replayed: u64,
        discarded: u64,
        clean: bool,
    },
    /// Raft: the log was compacted through `index` (`log_bytes` it held just before).
    RaftCompact {
        index: u64,
        snapshot_bytes: u64,
        log_bytes: u64,
    },
    /// Raft: committed work waits for the state machine (the reactor applies it; not
    /// written to COM2).
    RaftApply,
    /// Raft: a snapshot replaced the state machine (`action` "installed" from the leader,
    /// "loaded" from this node's own disk at boot).
    RaftSnapshot {
        action: &'static str,
        index: u64,
        bytes: u64,
    },
    /// Raft: the store failed and the node stalls (`state` "stalled", `error` its kind), or
    /// a retry worked and it resumes ("resumed").
    RaftStore {
        state: &'static str,
        error: &'static str,
    },
    /// Control plane: a command was committed and applied to the desired state (`reason`:
    /// why the scheduler bound or unbound a slot, `-` for operator commands).
    XylemCommit {
        index: u64,
        op: &'static str,
        service: TaskName,
        slot: u16,
        node: u64,
        epoch: u64,
        reason: &'static str,
    },
    /// Control plane: this node's reconcile started or stopped a cell (`why` for a stop).
    XylemAction {
        action: &'static str,
        cell: u64,
        service: TaskName,
        slot: u16,
        epoch: u64,
        name: CellLabel,
        why: &'static str,
    },
    /// Control plane: this node's lease for fenced cells ran out and it stopped `cells`.
    LeaseExpired { cells: u32 },
    /// The node is powering off.
    Poweroff,
    /// A transport message of `kind` from node `from` waits in its inbox (not written to
    /// COM2: one per datagram would drown the log).
    Message { kind: net::Kind, from: u64 },
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
            EventKind::CellStart { .. } => "cell_start",
            EventKind::CellExit { .. } => "cell_exit",
            EventKind::CellRestart { .. } => "cell_restart",
            EventKind::CellCrashLoop { .. } => "cell_crashloop",
            EventKind::NodeUp { .. } => "node_up",
            EventKind::NodeSuspect { .. } => "node_suspect",
            EventKind::NodeAlive { .. } => "node_alive",
            EventKind::NodeDown { .. } => "node_down",
            EventKind::NodeLeft { .. } => "node_left",
            EventKind::SelfSuspect { .. } => "self_suspect",
            EventKind::SelfTrusted { .. } => "self_trusted",
            EventKind::RaftRole { .. } => "raft_role",
            EventKind::RaftRecovery { .. } => "raft_recovery",
            EventKind::RaftApply => "raft_apply",
            EventKind::RaftCompact { .. } => "raft_compact",
            EventKind::RaftSnapshot { .. } => "raft_snapshot",
            EventKind::RaftStore { .. } => "raft_store",
            EventKind::XylemCommit { .. } => "xylem_commit",
            EventKind::XylemAction { .. } => "xylem_action",
            EventKind::LeaseExpired { .. } => "lease_expired",
            EventKind::Poweroff => "poweroff",
            EventKind::Message { .. } => "message",
        }
    }

    /// Whether the event goes to COM2.
    fn logged(&self) -> bool {
        !matches!(
            self,
            EventKind::Tick { .. } | EventKind::Message { .. } | EventKind::RaftApply
        )
    }
}

impl fmt::Display for EventKind {
    /// The `key=value` fields after `kind=`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Boot { id, role, frames_kib, heap_kib, tsc_mhz, tsc_err_ppm, boot_id } => write!(
                f,
                "id={id} role={role} version={} frames_kib={frames_kib} heap_kib={heap_kib} tsc_mhz={tsc_mhz} tsc_err_ppm={tsc_err_ppm} boot_id={boot_id:016x}",
                env!("CARGO_PKG_VERSION")
            ),
            EventKind::TaskExit { task, name, reason, cpu_ticks } => {
                write!(f, "task={task} name={name} reason={reason} cpu_ticks={cpu_ticks}")
            }
            EventKind::MemoryLow { free_frames } | EventKind::MemoryOk { free_frames } => {
                write!(f, "free_frames={free_frames}")
            }
            EventKind::Tick { ticks } => write!(f, "ticks={ticks}"),
            EventKind::CellStart { cell, task, payload, name } => {
                write!(f, "cell={cell} task={task} payload={payload}{}", NameField(name))
            }
            EventKind::CellExit { cell, reason, restarts, name } => {
                write!(f, "cell={cell} reason={reason} restarts={restarts}{}", NameField(name))
            }
            EventKind::CellRestart { cell, attempt, delay_ms, name } => {
                write!(f, "cell={cell} attempt={attempt} delay_ms={delay_ms}{}", NameField(name))
            }
            EventKind::CellCrashLoop { cell, failures, name } => {
                write!(f, "cell={cell} failures={failures}{}", NameField(name))
            }
            EventKind::NodeUp { peer } | EventKind::NodeLeft { peer } => write!(f, "peer={peer}"),
            EventKind::NodeSuspect { peer, incarnation } | EventKind::NodeAlive { peer, incarnation } => {
                write!(f, "peer={peer} incarnation={incarnation}")
            }
            EventKind::NodeDown { peer, reporter: None } => write!(f, "peer={peer} reason=suspicion_timeout"),
            EventKind::NodeDown { peer, reporter: Some(r) } => write!(f, "peer={peer} reason=reported_by reporter={r}"),
            EventKind::SelfSuspect { late_ms } => write!(f, "late_ms={late_ms}"),
            EventKind::SelfTrusted { withheld } => write!(f, "withheld={withheld}"),
            EventKind::RaftRole { role, term, leader, why } => write!(f, "role={role} term={term} leader={leader} why={why}"),
            EventKind::RaftRecovery { device, generation, replayed, discarded, clean } => {
                write!(f, "device={device} generation={generation} replayed={replayed} discarded={discarded} clean={clean}")
            }
            EventKind::RaftCompact { index, snapshot_bytes, log_bytes } => {
                write!(f, "index={index} snapshot_bytes={snapshot_bytes} log_bytes={log_bytes}")
            }
            EventKind::RaftSnapshot { action, index, bytes } => {
                write!(f, "action={action} index={index} bytes={bytes}")
            }
            EventKind::RaftStore { state, error } => write!(f, "state={state} error={error}"),
            EventKind::RaftApply => Ok(()),
            EventKind::XylemCommit { index, op, service, slot, node, epoch, reason } => {
                write!(f, "index={index} op={op} service={service} slot={slot} target={node} epoch={epoch} reason={reason}")
            }
            EventKind::XylemAction { action, cell, service, slot, epoch, name, why } => {
                write!(f, "action={action} cell={cell} name={name} service={service} slot={slot} epoch={epoch} why={why}")
            }
            EventKind::LeaseExpired { cells } => write!(f, "cells={cells}"),
            EventKind::Poweroff => write!(f, "reason=shell"),
            EventKind::Message { kind, from } => write!(f, "msg_kind={} from={from}", kind.name()),
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
static CONSUMERS: WaitQueue = WaitQueue::new();
/// The COM2 writer task waits here for queued lines.
static WRITER: WaitQueue = WaitQueue::new();

/// Starts the task that writes queued COM2 lines; from then on [`push`] and [`log_only`]
/// queue instead of writing. Call once, after the boot-time logging.
pub fn start_writer() -> Result<crate::sched::TaskId, crate::sched::SpawnError> {
    // Normal priority: above cells (a busy cell must not hold the event log back), below
    // the shell and the control plane's own tasks.
    let id = crate::sched::spawn("eventlog", kcore::run_queue::Priority::NORMAL, writer_loop)?;
    serial::defer_event_log();
    Ok(id)
}

/// How long the writer lets queued lines wait before writing them: what woke it (a cell
/// starting, say) finishes first instead of waiting behind the UART, and lines go out in
/// batches. Short enough that the harness and operators see events promptly.
const WRITER_DELAY_MS: u64 = 2;

fn writer_loop() {
    let mut dropped_reported = 0;
    loop {
        WRITER.wait_until(|| serial::event_log_counters().0 > 0);
        crate::sched::sleep_ms(WRITER_DELAY_MS);
        // Interrupts come back between chunks, so the writer never masks them for long.
        while serial::drain_event_log(128) > 0 {}
        let (_, dropped, _) = serial::event_log_counters();
        if dropped > dropped_reported {
            log_only(
                "log_dropped",
                format_args!("lines={}", dropped - dropped_reported),
            );
            dropped_reported = dropped;
        }
    }
}

/// Queues an event, logs it to COM2 and wakes the consumer. Safe from any context; after
/// the first call it never allocates (the rings are preallocated, events are inline).
pub fn push(kind: EventKind) {
    let t_us = time::now_us();
    if kind.logged() {
        serial::queue_event_line(format_args!(
            "t_us={t_us} node={} kind={} {}\n",
            node::name(),
            kind.name(),
            kind
        ));
        WRITER.wake_all();
    }
    without_interrupts(|| {
        RING.lock()
            .get_or_insert_with(|| EventRing::new(PENDING_CAP, HISTORY_CAP))
            .push(Event { t_us, kind });
    });
    CONSUMERS.wake_all();
}

/// Writes one COM2 line in the event format without queueing an event: for records too
/// large for the queue's inline events, such as the previous boot's panic (`last_panic`).
pub fn log_only(kind: &str, fields: fmt::Arguments) {
    serial::queue_event_line(format_args!(
        "t_us={} node={} kind={kind} {fields}\n",
        time::now_us(),
        node::name()
    ));
    WRITER.wake_all();
}

/// Takes the next event, blocking until one arrives.
pub fn next() -> Numbered<Event> {
    let mut taken = None;
    CONSUMERS.wait_until(|| {
        taken = RING.lock().as_mut().and_then(EventRing::pop);
        taken.is_some()
    });
    taken.expect("wait_until returned without an event")
}

/// Counters for `events`: (offered, pending, overflowed).
pub fn counters() -> (u64, usize, u64) {
    without_interrupts(|| {
        RING.lock()
            .as_ref()
            .map_or((0, 0, 0), |r| (r.offered(), r.pending(), r.overflowed()))
    })
}

/// The last `n` events, oldest first.
pub fn recent(n: usize) -> Vec<Numbered<Event>> {
    without_interrupts(|| {
        RING.lock()
            .as_ref()
            .map(|r| r.recent(n).cloned().collect())
            .unwrap_or_default()
    })
}
