//! The cell table: every cell this node runs or recently ran, with its lifecycle
//! (`cell::lifecycle::Cell`), supervision (`cell::supervise::Supervisor`), log, task and
//! address space.
//!
//! The table owns each running cell's `AddressSpace`, so a cell's memory is returned the
//! moment its task is gone — whether it exited, faulted or was stopped — and never by the
//! cell's own (possibly dead) stack. Finished cells stay listed for inspection; only the
//! most recent [`FINISHED_KEPT`] are kept (purged after every `cell run`, `cell stop` and
//! on the cell manager's tick), so the table's memory is bounded: a finished cell holds its
//! record (under 1 KiB) and what it logged (at most [`LOG_BYTES`]), so finished cells hold
//! at most [`FINISHED_HEAP_BOUND_BYTES`] of heap.
//!
//! A cell's end is recorded here by the scheduler's exit hook ([`record_exit`]) the moment
//! its task ends, not only as a `task_exit` event: the bounded event queue may drop that
//! event under a flood, and the cell manager's periodic sweep then finds the recorded end
//! and finishes the cell (frees its memory, asks supervision) all the same.

use ::cell::abi::Errno;
use ::cell::lifecycle::{Cell, CellId, CellStatus, ExitReason as CellExit, Phase};
use ::cell::logbuf::LogBuf;
use ::cell::spec::PayloadSpec;
use ::cell::supervise::Supervisor;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use super::io::{CellIo, CellParts, Limits};
use crate::arch::cpu::without_interrupts;
use crate::events::CellLabel;
use crate::events::ExitReason;
use crate::mm::address_space::AddressSpace;
use crate::sched::{self, TaskId};

/// Finished cells kept for `cell ls` and `cell logs`.
pub const FINISHED_KEPT: usize = 32;
/// Per-cell log capacity.
pub const LOG_BYTES: usize = 16 * 1024;
/// Heap one finished cell may hold at most: its log plus its record.
pub const FINISHED_CELL_HEAP_BYTES: usize = LOG_BYTES + 1024;
/// Heap the finished cells kept for inspection may hold at most, together.
pub const FINISHED_HEAP_BOUND_BYTES: usize = FINISHED_KEPT * FINISHED_CELL_HEAP_BYTES;

/// One cell.
pub struct CellRecord {
    pub cell: Cell,
    /// The cell's cluster-wide name (`web/1@7`), or `cell-<id>` for a local cell.
    pub name: String,
    pub limits: Limits,
    /// The incarnation's sockets and mappings (emptied when it ends).
    pub io: CellIo,
    pub args_blob: Vec<u8>,
    pub supervisor: Supervisor,
    pub log: LogBuf,
    pub task: Option<TaskId>,
    space: Option<AddressSpace>,
    /// When supervision will start the next incarnation.
    pub restart_at_ms: Option<u64>,
    pub crash_looped: bool,
    /// Set by `stop`: whatever ends the task next is final.
    pub stop_requested: bool,
    /// Set by the loader when the image could not be loaded.
    pub load_failed: bool,
    /// The cluster-wide name (`service/slot@epoch`) when the control plane started it for a
    /// slot; carried in its events.
    pub label: Option<CellLabel>,
    /// The task's end as the scheduler reported it (reason, CPU ticks), recorded the moment
    /// it happened and cleared when the cell manager finishes the incarnation.
    pub ended: Option<(ExitReason, u64)>,
}

impl CellRecord {
    pub fn new(
        id: u64,
        spec: PayloadSpec,
        args_blob: Vec<u8>,
        supervisor: Supervisor,
        now_ms: u64,
        name: String,
        limits: Limits,
    ) -> CellRecord {
        CellRecord {
            cell: Cell::new(CellId(id), spec, now_ms),
            name,
            limits,
            io: CellIo::new(),
            args_blob,
            supervisor,
            log: LogBuf::new(LOG_BYTES),
            task: None,
            space: None,
            restart_at_ms: None,
            crash_looped: false,
            stop_requested: false,
            load_failed: false,
            label: None,
            ended: None,
        }
    }

    /// The running incarnation's address space.
    pub fn space(&self) -> Result<&AddressSpace, Errno> {
        self.space.as_ref().ok_or(Errno::EFAULT)
    }

    /// The address space and the argument blob, borrowed together.
    pub fn space_and_args(&mut self) -> Result<(&mut AddressSpace, &[u8]), Errno> {
        Ok((self.space.as_mut().ok_or(Errno::EFAULT)?, &self.args_blob))
    }

    /// The running incarnation's limits, address space and descriptors, borrowed together.
    pub fn parts(&mut self) -> Result<CellParts<'_>, Errno> {
        Ok(CellParts {
            limits: self.limits,
            space: self.space.as_mut().ok_or(Errno::EFAULT)?,
            io: &mut self.io,
            cell: &mut self.cell,
        })
    }

    /// Installs a freshly loaded address space and marks the cell running.
    pub fn attach_space(&mut self, space: AddressSpace, now_ms: u64) {
        assert!(
            self.space.is_none(),
            "cell {} already has an address space",
            self.cell.id().0
        );
        self.cell.frames_acquired(space.frames_held());
        self.space = Some(space);
        if let Err(err) = self.cell.start(now_ms) {
            panic!("cell {} cannot start: {err:?}", self.cell.id().0);
        }
    }

    /// Ends the incarnation: closes its sockets, frees its memory and records the exit.
    pub fn detach(&mut self, reason: CellExit, cpu_ticks: u64, now_ms: u64) {
        self.io.clear();
        if let Some(space) = self.space.take() {
            let held = space.frames_held();
            drop(space);
            if let Err(err) = self.cell.frames_released(held) {
                panic!("cell {} frame accounting broken: {err:?}", self.cell.id().0);
            }
        }
        let _ = self.cell.add_cpu_ticks(cpu_ticks); // refused only if it never ran
        self.task = None;
        if self.cell.state() != Phase::Dead {
            if let Err(err) = self.cell.exit(reason, now_ms) {
                panic!(
                    "cell {} cannot exit from {:?}: {err:?}",
                    self.cell.id().0,
                    self.cell.state()
                );
            }
        }
    }

    /// What `cell ls` and the control plane see.
    pub fn status(&self) -> CellStatus {
        CellStatus::new(
            self.cell.state(),
            self.restart_at_ms.is_some(),
            self.crash_looped,
        )
    }

    /// Finished for good: no task, no restart pending.
    pub fn is_finished(&self) -> bool {
        self.task.is_none() && self.restart_at_ms.is_none() && self.cell.state() == Phase::Dead
    }
}

/// The cells, oldest first. A Vec rather than a map: it is small (running cells plus
/// [`FINISHED_KEPT`]), and once its capacity has settled, creating and purging cells moves
/// no heap memory at all, which is what lets the leak test demand exact equality.
pub struct Cells(Vec<CellRecord>);

impl Cells {
    pub fn get(&self, id: &u64) -> Option<&CellRecord> {
        self.0.iter().find(|c| c.cell.id().0 == *id)
    }

    pub fn get_mut(&mut self, id: &u64) -> Option<&mut CellRecord> {
        self.0.iter_mut().find(|c| c.cell.id().0 == *id)
    }

    pub fn values(&self) -> impl Iterator<Item = &CellRecord> {
        self.0.iter()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut CellRecord> {
        self.0.iter_mut()
    }

    /// Room for one more record, or `false` when the heap cannot provide it.
    pub fn try_reserve_one(&mut self) -> bool {
        self.0.try_reserve(1).is_ok()
    }

    /// Adds a record (call [`Cells::try_reserve_one`] first: this never reallocates then).
    pub fn insert(&mut self, record: CellRecord) {
        debug_assert!(
            self.0
                .last()
                .is_none_or(|last| last.cell.id() < record.cell.id()),
            "cell ids grow"
        );
        self.0.push(record);
    }

    /// Gives back the table's spare capacity after a crowd of cells is gone (only when at
    /// least three quarters of it are unused, so steady churn never reallocates).
    pub fn shrink_if_oversized(&mut self) {
        let (len, capacity) = (self.0.len(), self.0.capacity());
        if capacity > 64 && len * 4 < capacity {
            self.0.shrink_to(len * 2);
        }
    }

    pub fn remove(&mut self, id: &u64) -> Option<CellRecord> {
        let pos = self.0.iter().position(|c| c.cell.id().0 == *id)?;
        Some(self.0.remove(pos))
    }
}

struct Table {
    cells: Cells,
    next_id: u64,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    cells: Cells(Vec::new()),
    next_id: 1,
});

/// Runs `f` on the table with interrupts masked.
pub fn with<R>(f: impl FnOnce(&mut Cells) -> R) -> R {
    without_interrupts(|| f(&mut TABLE.lock().cells))
}

/// Reserves the next cell id.
pub fn next_id() -> u64 {
    without_interrupts(|| {
        let mut t = TABLE.lock();
        let id = t.next_id;
        t.next_id += 1;
        id
    })
}

/// The cell whose task is running now.
pub fn current_cell_id() -> Option<u64> {
    let task = sched::current_id();
    with(|cells| {
        cells
            .values()
            .find(|c| c.task == Some(task))
            .map(|c| c.cell.id().0)
    })
}

/// Runs `f` on the calling task's cell (for syscalls).
pub fn with_current<R>(f: impl FnOnce(&mut CellRecord) -> Result<R, Errno>) -> Result<R, Errno> {
    let task = sched::current_id();
    with(|cells| {
        let cell = cells
            .values_mut()
            .find(|c| c.task == Some(task))
            .ok_or(Errno::EPERM)?;
        f(cell)
    })
}

/// Heap the cells' logs hold now (they grow with use, so this varies with what the cells
/// printed before they ended).
#[cfg(feature = "ktest")]
pub fn logs_heap_bytes() -> u64 {
    with(|cells| cells.values().map(|c| c.log.heap_bytes() as u64).sum())
}

/// The scheduler's exit hook: records that `task` ended, in its cell's record (if it runs a
/// cell). Runs with interrupts masked and allocates nothing.
pub fn record_exit(task: TaskId, reason: &ExitReason, cpu_ticks: u64) {
    with(|cells| {
        if let Some(record) = cells.values_mut().find(|c| c.task == Some(task)) {
            if record.ended.is_none() {
                record.ended = Some((reason.clone(), cpu_ticks));
            }
        }
    });
}

/// Drops the oldest finished cells beyond [`FINISHED_KEPT`].
pub fn purge_finished() {
    with(|cells| {
        let finished = cells.values().filter(|c| c.is_finished()).count();
        for _ in 0..finished.saturating_sub(FINISHED_KEPT) {
            let oldest = cells
                .values()
                .find(|c| c.is_finished())
                .map(|c| c.cell.id().0);
            if let Some(id) = oldest {
                cells.remove(&id);
            }
        }
        cells.shrink_if_oversized();
    });
}
