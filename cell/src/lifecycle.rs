//! The cell object: identity, state machine, exit reason and resource accounting.
//!
//! ```text
//!   Created ──start──▶ Running ──stop──▶ Stopping
//!      │                  │                 │
//!      └──────exit────────┴──────exit───────┴──▶ Dead ──restart──▶ Created
//! ```
//!
//! * `Created`: the address space is being built; nothing has run yet. A load failure goes
//!   straight to `Dead` with [`ExitReason::LoadFailed`].
//! * `Running`: scheduled; CPU ticks and frames are accounted.
//! * `Stopping`: a stop was requested (operator, scale-down); the kernel is tearing it down.
//! * `Dead`: ended with an [`ExitReason`]. [`Cell::restart`] reuses the object for the next
//!   incarnation (same id, `restarts + 1`), and only once teardown has returned every frame.
//!
//! Every transition is checked against [`Phase::can_become`]; anything else returns
//! [`LifecycleError::InvalidTransition`] and changes nothing. Time is passed in (`now_ms`,
//! monotonic milliseconds of the node); a clock that goes backwards is refused too.
//! The supervision decision after `Dead` belongs to [`crate::supervise`]. Diagram and prose:
//! `docs/cells.md`.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::PayloadSpec;

/// Node-local cell identifier, as shown on the console and returned by the `cell_id` syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellId(pub u64);

impl fmt::Display for CellId {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{}", self.0)
    }
}

/// Where a cell is in its life (the lifecycle diagram above).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Being loaded; has not run.
    Created,
    /// Runnable or running.
    Running,
    /// A stop was requested; teardown in progress.
    Stopping,
    /// Ended; see the exit reason.
    Dead,
}

impl Phase {
    /// The transition table of the diagram above.
    pub fn can_become(self, next: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Created, Running)
                | (Created, Dead)
                | (Running, Stopping)
                | (Running, Dead)
                | (Stopping, Dead)
                | (Dead, Created)
        )
    }

    /// Lowercase name for the console and the event log.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Dead => "dead",
        }
    }
}

/// What the node shows for a cell: its [`Phase`] refined by supervision (a dead cell waiting
/// for its restart delay is `Backoff`; one whose crash-loop gate tripped is `CrashLoop`).
/// This is the one typed value the cell table hands to the shell and the control plane; the
/// spelling is only for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CellStatus {
    /// Being loaded; has not run.
    Created,
    /// Runnable or running.
    Running,
    /// Exited; the supervisor restarts it after a delay.
    Backoff,
    /// Exited; the crash-loop gate tripped, so the supervisor will not restart it.
    CrashLoop,
    /// A stop was requested; teardown in progress.
    Stopping,
    /// Ended for good (its restart policy says so, or it was stopped).
    Dead,
}

impl CellStatus {
    /// The status of a cell in `phase`, given what its supervisor decided.
    pub fn new(phase: Phase, restart_pending: bool, crash_looped: bool) -> Self {
        if crash_looped {
            Self::CrashLoop
        } else if restart_pending {
            Self::Backoff
        } else {
            match phase {
                Phase::Created => Self::Created,
                Phase::Running => Self::Running,
                Phase::Stopping => Self::Stopping,
                Phase::Dead => Self::Dead,
            }
        }
    }

    /// Lowercase name for `cell ls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::CrashLoop => "crash-loop",
            Self::Stopping => "stopping",
            Self::Dead => "dead",
        }
    }
}

/// Why a cell ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// The payload called `exit(code)` (or returned `code` from main; 101 = panic).
    Exited(i32),
    /// A CPU exception in ring 3: vector, faulting address (CR2 for #PF, else 0), and `rip`.
    Faulted { vector: u8, addr: u64, rip: u64 },
    /// Stopped on request (operator or reconcile); intentional, not a failure.
    Killed,
    /// Ended by the kernel for exceeding its CPU budget without yielding.
    CpuLimit,
    /// The kernel could not give it the memory it needed.
    OutOfMemory,
    /// The image could not be loaded (ELF refused, payload unknown, no frames for the image).
    LoadFailed,
}

impl ExitReason {
    /// Whether the supervisor counts this end as a failure (for `on-failure` and the
    /// crash-loop gate). Only a clean `exit(0)` and a requested kill are not failures.
    pub fn is_failure(self) -> bool {
        match self {
            ExitReason::Exited(code) => code != 0,
            ExitReason::Killed => false,
            ExitReason::Faulted { .. }
            | ExitReason::CpuLimit
            | ExitReason::OutOfMemory
            | ExitReason::LoadFailed => true,
        }
    }
}

impl fmt::Display for ExitReason {
    /// The `key=value` form used in the event log, e.g. `faulted vector=14(#PF) addr=0x1000`.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitReason::Exited(code) => write!(out, "exited code={code}"),
            ExitReason::Faulted { vector, addr, rip } => {
                write!(
                    out,
                    "faulted vector={vector}({}) addr={addr:#x} rip={rip:#x}",
                    exception_name(vector)
                )
            }
            ExitReason::Killed => out.write_str("killed"),
            ExitReason::CpuLimit => out.write_str("cpu-limit"),
            ExitReason::OutOfMemory => out.write_str("out-of-memory"),
            ExitReason::LoadFailed => out.write_str("load-failed"),
        }
    }
}

/// Mnemonic of an x86 exception vector (Intel SDM vol. 3A, table 6-1).
pub fn exception_name(vector: u8) -> &'static str {
    const NAMES: [&str; 22] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "reserved", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    ];
    NAMES.get(usize::from(vector)).copied().unwrap_or("unknown")
}

/// A lifecycle operation that was refused; the cell is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleError {
    /// `from -> to` is not an edge of the state machine.
    InvalidTransition { from: Phase, to: Phase },
    /// `now_ms` is earlier than the last recorded event.
    ClockWentBackwards { last_ms: u64, now_ms: u64 },
    /// Releasing more frames than the cell holds.
    FramesUnderflow { held: u64, released: u64 },
    /// Restart asked while teardown has not returned every frame.
    FramesStillHeld { held: u64 },
    /// CPU time charged to a cell that is not running.
    NotRunning { state: Phase },
}

/// One cell: a payload instance with its state and accounting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    id: CellId,
    spec: PayloadSpec,
    state: Phase,
    created_ms: u64,
    started_ms: Option<u64>,
    ended_ms: Option<u64>,
    last_event_ms: u64,
    exit: Option<ExitReason>,
    restarts: u32,
    frames_held: u64,
    frames_peak: u64,
    cpu_ticks: u64,
    cpu_ticks_total: u64,
}

impl Cell {
    /// A new cell in `Created`.
    pub fn new(id: CellId, spec: PayloadSpec, now_ms: u64) -> Self {
        Cell {
            id,
            spec,
            state: Phase::Created,
            created_ms: now_ms,
            started_ms: None,
            ended_ms: None,
            last_event_ms: now_ms,
            exit: None,
            restarts: 0,
            frames_held: 0,
            frames_peak: 0,
            cpu_ticks: 0,
            cpu_ticks_total: 0,
        }
    }

    /// `Created -> Running`: the image is loaded and the cell enters the run queue.
    pub fn start(&mut self, now_ms: u64) -> Result<(), LifecycleError> {
        self.transition(Phase::Running, now_ms)?;
        self.started_ms = Some(now_ms);
        Ok(())
    }

    /// `Running -> Stopping`: a stop was requested.
    pub fn stop(&mut self, now_ms: u64) -> Result<(), LifecycleError> {
        self.transition(Phase::Stopping, now_ms)
    }

    /// `Created | Running | Stopping -> Dead` with the reason it ended.
    pub fn exit(&mut self, reason: ExitReason, now_ms: u64) -> Result<(), LifecycleError> {
        self.transition(Phase::Dead, now_ms)?;
        self.exit = Some(reason);
        self.ended_ms = Some(now_ms);
        debug_assert!(self
            .started_ms
            .is_none_or(|started_ms| started_ms <= now_ms));
        Ok(())
    }

    /// `Dead -> Created` for the next incarnation: same id, `restarts + 1`, fresh uptime and
    /// per-incarnation CPU ticks. Refused while frames are still held (teardown first).
    pub fn restart(&mut self, now_ms: u64) -> Result<(), LifecycleError> {
        if self.state == Phase::Dead && self.frames_held != 0 {
            return Err(LifecycleError::FramesStillHeld {
                held: self.frames_held,
            });
        }
        self.transition(Phase::Created, now_ms)?;
        self.restarts = self.restarts.saturating_add(1);
        self.created_ms = now_ms;
        self.started_ms = None;
        self.ended_ms = None;
        self.exit = None;
        self.cpu_ticks = 0;
        self.frames_peak = 0;
        Ok(())
    }

    /// Records `count` frames mapped for this cell (image, stack, page tables).
    pub fn frames_acquired(&mut self, count: u64) {
        self.frames_held = self.frames_held.saturating_add(count);
        self.frames_peak = self.frames_peak.max(self.frames_held);
    }

    /// Records `count` frames returned by teardown.
    pub fn frames_released(&mut self, count: u64) -> Result<(), LifecycleError> {
        if count > self.frames_held {
            return Err(LifecycleError::FramesUnderflow {
                held: self.frames_held,
                released: count,
            });
        }
        self.frames_held -= count;
        Ok(())
    }

    /// Charges `ticks` timer ticks of CPU to the cell (only while it runs or is stopping).
    pub fn add_cpu_ticks(&mut self, ticks: u64) -> Result<(), LifecycleError> {
        if !matches!(self.state, Phase::Running | Phase::Stopping) {
            return Err(LifecycleError::NotRunning { state: self.state });
        }
        self.cpu_ticks = self.cpu_ticks.saturating_add(ticks);
        self.cpu_ticks_total = self.cpu_ticks_total.saturating_add(ticks);
        Ok(())
    }

    /// Milliseconds this incarnation has run: up to `now_ms` while alive, up to its end once
    /// dead, zero before it started.
    pub fn uptime_ms(&self, now_ms: u64) -> u64 {
        match (self.started_ms, self.ended_ms) {
            (Some(started_ms), Some(ended_ms)) => ended_ms - started_ms,
            (Some(started_ms), None) => now_ms.saturating_sub(started_ms),
            (None, _) => 0,
        }
    }

    /// Identifier.
    pub fn id(&self) -> CellId {
        self.id
    }
    /// What it runs.
    pub fn spec(&self) -> &PayloadSpec {
        &self.spec
    }
    /// Current state.
    pub fn state(&self) -> Phase {
        self.state
    }
    /// Why the current incarnation ended (`Some` only when `Dead`).
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.exit
    }
    /// How many times the cell was restarted.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
    /// Frames currently held.
    pub fn frames_held(&self) -> u64 {
        self.frames_held
    }
    /// Most frames held at once in this incarnation.
    pub fn frames_peak(&self) -> u64 {
        self.frames_peak
    }
    /// CPU ticks of this incarnation.
    pub fn cpu_ticks(&self) -> u64 {
        self.cpu_ticks
    }
    /// CPU ticks over all incarnations.
    pub fn cpu_ticks_total(&self) -> u64 {
        self.cpu_ticks_total
    }
    /// When this incarnation was created.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    fn transition(&mut self, next: Phase, now_ms: u64) -> Result<(), LifecycleError> {
        self.assert_invariants();
        if !self.state.can_become(next) {
            return Err(LifecycleError::InvalidTransition {
                from: self.state,
                to: next,
            });
        }
        if now_ms < self.last_event_ms {
            return Err(LifecycleError::ClockWentBackwards {
                last_ms: self.last_event_ms,
                now_ms,
            });
        }
        self.state = next;
        self.last_event_ms = now_ms;
        Ok(())
    }

    /// Invariants that hold between operations (checked on entry to every transition).
    fn assert_invariants(&self) {
        let dead = self.state == Phase::Dead;
        assert_eq!(
            self.exit.is_some(),
            dead,
            "exit reason present exactly when dead"
        );
        assert_eq!(
            self.ended_ms.is_some(),
            dead,
            "end time present exactly when dead"
        );
        assert!(
            self.frames_peak >= self.frames_held,
            "peak below current frames"
        );
        assert!(
            self.cpu_ticks <= self.cpu_ticks_total,
            "incarnation ticks above total"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [Phase; 4] = [Phase::Created, Phase::Running, Phase::Stopping, Phase::Dead];

    fn cell() -> Cell {
        Cell::new(CellId(7), PayloadSpec::new("hello", &[]), 1_000)
    }

    #[test]
    fn happy_path_runs_to_dead_and_restarts() {
        let mut cell = cell();
        assert_eq!(cell.state(), Phase::Created);
        cell.frames_acquired(20);
        cell.start(1_010).unwrap();
        cell.add_cpu_ticks(5).unwrap();
        assert_eq!(cell.uptime_ms(1_510), 500);
        cell.stop(2_000).unwrap();
        cell.add_cpu_ticks(1).unwrap();
        cell.exit(ExitReason::Killed, 2_010).unwrap();
        assert_eq!(cell.state(), Phase::Dead);
        assert_eq!(cell.exit_reason(), Some(ExitReason::Killed));
        assert_eq!(cell.uptime_ms(9_999), 1_000, "uptime freezes at the exit");
        assert_eq!(
            cell.restart(2_020),
            Err(LifecycleError::FramesStillHeld { held: 20 })
        );
        cell.frames_released(20).unwrap();
        cell.restart(2_020).unwrap();
        assert_eq!(
            (
                cell.state(),
                cell.restarts(),
                cell.cpu_ticks(),
                cell.cpu_ticks_total()
            ),
            (Phase::Created, 1, 0, 6)
        );
        assert_eq!(
            (cell.exit_reason(), cell.uptime_ms(3_000), cell.id()),
            (None, 0, CellId(7))
        );
    }

    #[test]
    fn transition_table_is_exactly_the_diagram() {
        let allowed = [
            (Phase::Created, Phase::Running),
            (Phase::Created, Phase::Dead),
            (Phase::Running, Phase::Stopping),
            (Phase::Running, Phase::Dead),
            (Phase::Stopping, Phase::Dead),
            (Phase::Dead, Phase::Created),
        ];
        for from in ALL_STATES {
            for to in ALL_STATES {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_transitions_are_typed_errors_and_change_nothing() {
        let mut cell = cell();
        assert_eq!(
            cell.stop(1_001),
            Err(LifecycleError::InvalidTransition {
                from: Phase::Created,
                to: Phase::Stopping
            })
        );
        assert_eq!(
            cell.restart(1_001),
            Err(LifecycleError::InvalidTransition {
                from: Phase::Created,
                to: Phase::Created
            })
        );
        cell.start(1_002).unwrap();
        assert_eq!(
            cell.start(1_003),
            Err(LifecycleError::InvalidTransition {
                from: Phase::Running,
                to: Phase::Running
            })
        );
        cell.exit(ExitReason::Exited(3), 1_004).unwrap();
        let before = cell.clone();
        assert_eq!(
            cell.exit(ExitReason::Exited(0), 1_005),
            Err(LifecycleError::InvalidTransition {
                from: Phase::Dead,
                to: Phase::Dead
            })
        );
        assert_eq!(
            cell.stop(1_005),
            Err(LifecycleError::InvalidTransition {
                from: Phase::Dead,
                to: Phase::Stopping
            })
        );
        assert_eq!(cell, before);
    }

    #[test]
    fn load_failure_goes_straight_to_dead() {
        let mut cell = cell();
        cell.exit(ExitReason::LoadFailed, 1_001).unwrap();
        assert_eq!(cell.uptime_ms(5_000), 0);
        assert!(cell.exit_reason().unwrap().is_failure());
    }

    #[test]
    fn clock_going_backwards_is_refused() {
        let mut cell = cell();
        assert_eq!(
            cell.start(999),
            Err(LifecycleError::ClockWentBackwards {
                last_ms: 1_000,
                now_ms: 999
            })
        );
        assert_eq!(cell.state(), Phase::Created);
    }

    #[test]
    fn frame_and_cpu_accounting_is_checked() {
        let mut cell = cell();
        assert_eq!(
            cell.add_cpu_ticks(1),
            Err(LifecycleError::NotRunning {
                state: Phase::Created
            })
        );
        cell.frames_acquired(3);
        cell.frames_acquired(4);
        cell.frames_released(5).unwrap();
        assert_eq!((cell.frames_held(), cell.frames_peak()), (2, 7));
        assert_eq!(
            cell.frames_released(3),
            Err(LifecycleError::FramesUnderflow {
                held: 2,
                released: 3
            })
        );
        assert_eq!(cell.frames_held(), 2);
    }

    #[test]
    fn failure_classification() {
        assert!(!ExitReason::Exited(0).is_failure());
        assert!(ExitReason::Exited(1).is_failure());
        assert!(ExitReason::Exited(-1).is_failure());
        assert!(ExitReason::Exited(101).is_failure());
        assert!(ExitReason::Faulted {
            vector: 14,
            addr: 0x1000,
            rip: 0x40_0000
        }
        .is_failure());
        assert!(!ExitReason::Killed.is_failure());
        assert!(ExitReason::CpuLimit.is_failure());
        assert!(ExitReason::OutOfMemory.is_failure());
        assert!(ExitReason::LoadFailed.is_failure());
    }

    #[test]
    fn exit_reasons_print_for_the_event_log() {
        use alloc::string::ToString;
        let fault = ExitReason::Faulted {
            vector: 14,
            addr: 0x1000,
            rip: 0x40_0123,
        };
        assert_eq!(
            fault.to_string(),
            "faulted vector=14(#PF) addr=0x1000 rip=0x400123"
        );
        assert_eq!(ExitReason::Exited(14).to_string(), "exited code=14");
        assert_eq!(exception_name(13), "#GP");
        assert_eq!(exception_name(0), "#DE");
        assert_eq!(exception_name(6), "#UD");
        assert_eq!(exception_name(200), "unknown");
    }
}
