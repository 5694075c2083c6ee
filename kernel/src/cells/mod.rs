//! Cells on this node: start, stop, supervise.
//!
//! A cell is a ring-3 payload in its own address space, run by one kernel task. The task
//! starts in [`cell_main`], loads the payload (`loader`), hands the address space to the
//! table, switches to it and drops to ring 3. From then on the cell reaches the kernel only
//! through `syscalls` and faults. Whatever ends the task — `exit`, a CPU exception in ring 3
//! (`on_user_fault`), or `stop` — the scheduler reports a `task_exit`; the reactor passes
//! it to [`on_task_exit`], which frees the cell's memory, records the exit and asks the
//! supervision policy (`cell::supervise`) whether and when to restart. Restarts are
//! started from [`on_tick`] when their backoff has passed.
//!
//! No exit is lost: the scheduler's exit hook records a cell's end in its table record
//! (`table::record_exit`) before the `task_exit` event is queued, and [`on_tick`] finishes
//! any recorded end whose event never arrived (the queue overflowed). No panic on
//! exhaustion: starting a cell checks the heap's headroom ([`HEAP_RESERVE_BYTES`]) and
//! allocates its table slot and kernel stack fallibly, so running out of heap or tasks is
//! a clear refusal ([`CellError::OutOfMemory`], [`CellError::TooManyTasks`]) at the shell
//! and to the control plane.

pub mod io;
mod loader;
pub mod payloads;
mod sys_mem;
mod sys_net;
pub mod syscalls;
pub mod table;

use ::cell::lifecycle::{CellStatus, ExitReason as CellExit};
use ::cell::spec::{PayloadSpec, RestartPolicy};
use ::cell::supervise::{self, Decision, Supervisor};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::run_queue::Priority;

pub use self::io::Limits;
use self::table::CellRecord;
use crate::arch::idt::UserFault;
use crate::arch::{cpu, syscall};
use crate::events::{self, CellLabel, EventKind, ExitReason};
use crate::sched::{self, TaskId};
use crate::time;

/// TSC just before the most recent drop to ring 3 (for `bench-cells`).
pub static LAST_USER_ENTRY_TSC: AtomicU64 = AtomicU64::new(0);

/// The steps of starting a cell, in order, for the spawn breakdown of `bench-cells`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnStage {
    /// `run` returned: spec checks, supervisor, table record, task (with its kernel stack).
    Requested,
    /// The cell's task started running (`cell_main`).
    TaskRunning,
    /// The payload's image was found in the cache (validated and its text built at boot,
    /// `loader::prepare`).
    Parsed,
    /// The address space exists (top-level table, kernel half copied).
    SpaceReady,
    /// Every segment is mapped and filled.
    SegmentsMapped,
    /// The user stack is mapped.
    StackMapped,
    /// The table took the space; the cell is running.
    Attached,
}

impl SpawnStage {
    /// Every stage, in order.
    pub const ALL: [SpawnStage; 7] = [
        SpawnStage::Requested,
        SpawnStage::TaskRunning,
        SpawnStage::Parsed,
        SpawnStage::SpaceReady,
        SpawnStage::SegmentsMapped,
        SpawnStage::StackMapped,
        SpawnStage::Attached,
    ];

    /// The name the benchmark prints.
    #[cfg(feature = "ktest")]
    pub fn name(self) -> &'static str {
        match self {
            SpawnStage::Requested => "request",
            SpawnStage::TaskRunning => "schedule",
            SpawnStage::Parsed => "image_lookup",
            SpawnStage::SpaceReady => "address_space",
            SpawnStage::SegmentsMapped => "segments",
            SpawnStage::StackMapped => "stack",
            SpawnStage::Attached => "attach",
        }
    }
}

/// TSC at each stage of the most recent cell start (for `bench-cells`).
pub static SPAWN_STAGE_TSC: [AtomicU64; SpawnStage::ALL.len()] =
    [const { AtomicU64::new(0) }; SpawnStage::ALL.len()];

/// Records that the current cell start reached `stage`.
pub fn stamp(stage: SpawnStage) {
    SPAWN_STAGE_TSC[stage as usize].store(cpu::rdtsc(), Ordering::Relaxed);
}

/// Why a cell could not be started or stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum CellError {
    UnknownPayload(String),
    BadSpec(String),
    NoSuchCell(u64),
    AlreadyFinished(u64),
    Spawn(String),
    /// The heap cannot hold another cell and still keep the kernel's own reserve.
    OutOfMemory {
        free_bytes: u64,
        needed_bytes: u64,
    },
    /// Every task slot is in use.
    TooManyTasks,
    /// Physical memory cannot hold another cell and still keep the kernel's reserve.
    OutOfFrames {
        free_frames: u64,
        needed_frames: u64,
    },
}

impl core::fmt::Display for CellError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CellError::UnknownPayload(name) => {
                let known: Vec<&str> = payloads::names().collect();
                write!(
                    f,
                    "no payload named '{name}' (available: {})",
                    known.join(", ")
                )
            }
            CellError::BadSpec(why) => write!(f, "{why}"),
            CellError::NoSuchCell(id) => write!(f, "no cell {id} (see 'cell ls')"),
            CellError::AlreadyFinished(id) => write!(f, "cell {id} is not running"),
            CellError::Spawn(why) => write!(f, "cannot start a task: {why}"),
            CellError::OutOfMemory {
                free_bytes,
                needed_bytes,
            } => write!(
                f,
                "ENOMEM: out of kernel heap ({} KiB free, a cell needs {} KiB beyond the kernel's reserve); stop cells or give the node more memory",
                free_bytes / 1024,
                needed_bytes.div_ceil(1024)
            ),
            CellError::OutOfFrames {
                free_frames,
                needed_frames,
            } => write!(
                f,
                "ENOMEM: out of physical memory ({} KiB free, a cell needs about {} KiB beyond the kernel's reserve); stop cells or give the node more memory",
                free_frames * 4,
                needed_frames * 4
            ),
            CellError::TooManyTasks => write!(
                f,
                "EAGAIN: the task table is full ({} tasks); stop a cell first",
                sched::MAX_TASKS
            ),
        }
    }
}

/// Heap a new cell costs up front: its kernel stack, its record, and its log's first
/// growth (the loader's transient buffers come out of the reserve).
pub const CELL_HEAP_BYTES: u64 = crate::arch::switch::STACK_BYTES as u64 + 4096;

/// Heap kept for the kernel itself (Raft log, membership, the network, the shell) that
/// cells never take: an eighth of the heap, at least 1 MiB.
pub fn heap_reserve_bytes() -> u64 {
    let (_, size) = crate::mm::heap::usage();
    (size / 8).max(HEAP_RESERVE_BYTES)
}

/// The least heap [`heap_reserve_bytes`] keeps back.
pub const HEAP_RESERVE_BYTES: u64 = 1 << 20;

/// Installs the syscall and ring-3 fault handlers and the exit hook. Call once at boot.
pub fn init() {
    syscall::init(syscalls::on_syscall);
    crate::arch::idt::set_user_fault_handler(on_user_fault);
    // Validate every payload and build its shared text once (see `loader`). A payload that
    // fails here fails to load later (LoadFailed), with the reason in its cell's log.
    for name in payloads::names() {
        if let Some(image) = payloads::image(name) {
            if let Err(err) = loader::prepare(name, image) {
                log::error!("cells: payload '{name}' is unusable: {err:?}");
            }
        }
    }
    sched::set_exit_hook(table::record_exit);
}

/// Physical frames kept for the kernel (DMA, page tables of running cells, the network)
/// that new cells never take: a sixteenth of all frames, at least 256 (1 MiB).
fn frame_reserve() -> u64 {
    (crate::mm::frames::total_frames() / 16).max(256)
}

/// Refuses a new cell when its image, stack and page tables would not fit in the free
/// frames on top of the kernel's reserve (the loader would fail later otherwise).
fn check_frame_headroom(image_bytes: usize) -> Result<(), CellError> {
    let pages = |bytes: u64| bytes.div_ceil(crate::mm::PAGE_BYTES);
    // Image (with zeroed bss, rounded), stack, and a handful of page-table pages.
    let needed_frames = pages(image_bytes as u64) + pages(::cell::abi::USER_STACK_BYTES) + 8;
    let free_frames = crate::mm::frames::free_frames();
    if free_frames < needed_frames + frame_reserve() {
        return Err(CellError::OutOfFrames {
            free_frames,
            needed_frames,
        });
    }
    Ok(())
}

/// Refuses a new cell when the heap could not hold it on top of the kernel's reserve.
fn check_heap_headroom() -> Result<(), CellError> {
    let (used, size) = crate::mm::heap::usage();
    let free_bytes = size.saturating_sub(used);
    let needed_bytes = CELL_HEAP_BYTES + heap_reserve_bytes();
    if free_bytes < needed_bytes {
        return Err(CellError::OutOfMemory {
            free_bytes,
            needed_bytes: CELL_HEAP_BYTES,
        });
    }
    Ok(())
}

fn now_ms() -> u64 {
    time::now_us() / 1000
}

/// Starts a cell running `spec`, supervised with `policy`, within `limits`. `label` is its
/// cluster-wide name (`web/1@7`: what its events carry and `cell_info` tells the payload) when
/// the control plane started it for a slot; `None` names a local cell `cell-<id>`.
pub fn run(
    spec: PayloadSpec,
    policy: RestartPolicy,
    limits: Limits,
    label: Option<CellLabel>,
) -> Result<u64, CellError> {
    let Some(image) = payloads::image(&spec.payload) else {
        return Err(CellError::UnknownPayload(spec.payload.clone()));
    };
    let args_blob = spec
        .encode_args()
        .map_err(|e| CellError::BadSpec(format!("{e:?}")))?;
    let config = supervise::Config {
        policy,
        ..supervise::Config::default()
    };
    let supervisor = Supervisor::new(config).map_err(|e| CellError::BadSpec(format!("{e:?}")))?;
    // Finished cells beyond the kept few go first: their memory may be what we need.
    table::purge_finished();
    check_heap_headroom()?;
    check_frame_headroom(image.len())?;
    let id = table::next_id();
    let name = label.map_or_else(|| format!("cell-{id}"), |l| String::from(l.as_str()));
    let mut record = CellRecord::new(id, spec, args_blob, supervisor, now_ms(), name, limits);
    record.label = label;
    let inserted = table::with(|cells| {
        let room = cells.try_reserve_one();
        if room {
            cells.insert(record);
        }
        room
    });
    if !inserted {
        let (used, size) = crate::mm::heap::usage();
        return Err(CellError::OutOfMemory {
            free_bytes: size.saturating_sub(used),
            needed_bytes: CELL_HEAP_BYTES,
        });
    }
    if let Err(err) = start_incarnation(id) {
        table::with(|cells| cells.remove(&id));
        return Err(err);
    }
    stamp(SpawnStage::Requested);
    Ok(id)
}

fn start_incarnation(id: u64) -> Result<(), CellError> {
    let task = sched::spawn_fn(&format!("cell-{id}"), Priority::CELL, cell_main, id).map_err(
        |e| match e {
            sched::SpawnError::TooManyTasks => CellError::TooManyTasks,
            sched::SpawnError::OutOfMemory => {
                let (used, size) = crate::mm::heap::usage();
                CellError::OutOfMemory {
                    free_bytes: size.saturating_sub(used),
                    needed_bytes: CELL_HEAP_BYTES,
                }
            }
            other => CellError::Spawn(format!("{other:?}")),
        },
    )?;
    table::with(|cells| {
        if let Some(record) = cells.get_mut(&id) {
            record.task = Some(task);
            record.supervisor.on_start(now_ms());
        }
    });
    Ok(())
}

/// The body of a cell's task: load, attach, enter ring 3. Nothing this function owns may
/// still be alive when it enters ring 3: that stack frame is never unwound.
// The one unsafe item outside arch, mm and drivers: a cell's task loads the cell's tables
// and drops to ring 3. Its two contracts are kept by the cell table (see the SAFETY lines).
#[allow(unsafe_code)]
fn cell_main(id: u64) {
    stamp(SpawnStage::TaskRunning);
    let Some((payload, label)) = table::with(|cells| {
        cells
            .get(&id)
            .map(|c| (c.cell.spec().payload.clone(), c.label))
    }) else {
        return;
    };
    let image = payloads::image(&payload).expect("payload checked when the cell was created");
    let loaded = match loader::load(&payload, image) {
        Ok(loaded) => loaded,
        Err(err) => {
            table::with(|cells| {
                if let Some(record) = cells.get_mut(&id) {
                    record.load_failed = true;
                    record.log.push(
                        format!("xylem: cannot load payload '{payload}': {err:?}\n").as_bytes(),
                    );
                }
            });
            sched::exit(ExitReason::Exited(-8));
        }
    };
    let (cr3, entry, stack_top) = (loaded.space.cr3(), loaded.entry, loaded.stack_top);
    let name = events::TaskName::new(&payload);
    // From the moment the cell is visible as running, `stop` may kill this task, and a
    // killed task's stack is never unwound: drop everything this frame owns first.
    drop(payload);
    let attached = table::with(|cells| match cells.get_mut(&id) {
        Some(record) if !record.stop_requested => {
            record.attach_space(loaded.space, now_ms());
            stamp(SpawnStage::Attached);
            true
        }
        // Stopped while loading: `loaded` is dropped here, and the task simply returns.
        _ => false,
    });
    if !attached {
        return;
    }
    // The event first, while the kernel's TLB entries are still warm: after the CR3 load
    // TCG refills every page it touches (measured: a few µs of `enter_user`).
    events::push(EventKind::CellStart {
        cell: id,
        task: sched::current_id(),
        payload: name,
        name: label,
    });
    // SAFETY: the record now owns the space, and the table drops it only once this task is
    // gone (`CellRecord::detach` runs on the task's exit or after `sched::kill`).
    unsafe { sched::set_address_space(cr3) };
    LAST_USER_ENTRY_TSC.store(cpu::rdtsc(), Ordering::Relaxed);
    // SAFETY: the cell's space is loaded (above), it maps `entry` and `stack_top` (checked by
    // the loader), and the scheduler set this task's kernel stack in the TSS when it switched
    // to it.
    unsafe { syscall::enter_user(entry, stack_top) }
}

/// A CPU exception in ring 3 ends the cell that raised it — never the node.
fn on_user_fault(fault: UserFault) -> ! {
    sched::exit(ExitReason::Faulted {
        vector: fault.vector,
        addr: fault.addr,
        rip: fault.rip,
    })
}

fn to_cell_exit(reason: &ExitReason, load_failed: bool) -> CellExit {
    match *reason {
        _ if load_failed => CellExit::LoadFailed,
        ExitReason::Exited(code) => CellExit::Exited(i32::try_from(code).unwrap_or(i32::MIN)),
        ExitReason::Faulted { vector, addr, rip } => CellExit::Faulted { vector, addr, rip },
        ExitReason::Killed => CellExit::Killed,
    }
}

/// A task ended (from the reactor, the sweep, or directly from `stop`). Ignores non-cell
/// tasks and ends already handled.
pub fn on_task_exit(task: TaskId, reason: &ExitReason, cpu_ticks: u64) {
    let now = now_ms();
    let mut to_emit = Vec::new();
    table::with(|cells| {
        let Some(record) = cells.values_mut().find(|c| c.task == Some(task)) else {
            return;
        };
        let exit = to_cell_exit(reason, record.load_failed);
        finish_incarnation(record, exit, cpu_ticks, now, &mut to_emit);
    });
    for kind in to_emit {
        events::push(kind);
    }
}

/// Ends a cell's incarnation (its memory returns now) and asks supervision what next.
fn finish_incarnation(
    record: &mut CellRecord,
    exit: CellExit,
    cpu_ticks: u64,
    now: u64,
    to_emit: &mut Vec<EventKind>,
) {
    let id = record.cell.id().0;
    let label = record.label;
    record.ended = None;
    record.detach(exit, cpu_ticks, now);
    to_emit.push(EventKind::CellExit {
        cell: id,
        reason: exit,
        restarts: record.cell.restarts(),
        name: label,
    });
    if record.stop_requested {
        return;
    }
    match record.supervisor.on_exit(exit, now) {
        Decision::RestartAt(at_ms) => {
            record.restart_at_ms = Some(at_ms);
            to_emit.push(EventKind::CellRestart {
                cell: id,
                attempt: record.cell.restarts() + 1,
                delay_ms: at_ms.saturating_sub(now),
                name: label,
            });
        }
        Decision::CrashLoop => {
            record.crash_looped = true;
            to_emit.push(EventKind::CellCrashLoop {
                cell: id,
                failures: record.supervisor.failures_total(),
                name: label,
            });
        }
        Decision::Stop => {}
    }
}

/// A restart whose task could not be started (no heap, no task slot) counts as a failed
/// start: supervision backs off and tries again, or gives up.
fn fail_start(id: u64) {
    let now = now_ms();
    let mut to_emit = Vec::new();
    table::with(|cells| {
        if let Some(record) = cells.get_mut(&id) {
            if record.task.is_none() && record.cell.state() != ::cell::lifecycle::Phase::Dead {
                finish_incarnation(record, CellExit::LoadFailed, 0, now, &mut to_emit);
            }
        }
    });
    for kind in to_emit {
        events::push(kind);
    }
}

/// Ends recorded by the exit hook whose `task_exit` event has not been handled (it may
/// have been lost to a full event queue), and cells whose task is gone without any record:
/// (task, reason, CPU ticks) for each.
fn unreaped_exits() -> Vec<(TaskId, ExitReason, u64)> {
    table::with(|cells| {
        cells
            .values()
            .filter_map(|c| {
                let task = c.task?;
                match &c.ended {
                    Some((reason, ticks)) => Some((task, reason.clone(), *ticks)),
                    // A cell that is still loading owns its task; only an attached one can
                    // have vanished without a word.
                    None if c.cell.state() == ::cell::lifecycle::Phase::Running
                        && !sched::exists(task) =>
                    {
                        Some((task, ExitReason::Killed, 0))
                    }
                    None => None,
                }
            })
            .collect()
    })
}

/// The cell manager's tick: finishes ends whose events never came, starts the restarts
/// whose backoff has passed, and purges old finished cells.
pub fn on_tick() {
    for (task, reason, cpu_ticks) in unreaped_exits() {
        SWEPT_EXITS.fetch_add(1, Ordering::Relaxed);
        on_task_exit(task, &reason, cpu_ticks);
    }
    let now = now_ms();
    let due: Vec<u64> = table::with(|cells| {
        cells
            .values_mut()
            .filter(|c| c.restart_at_ms.is_some_and(|at| at <= now))
            .map(|c| {
                c.restart_at_ms = None;
                if let Err(err) = c.cell.restart(now) {
                    panic!("cell {} cannot restart: {err:?}", c.cell.id().0);
                }
                c.load_failed = false;
                c.cell.id().0
            })
            .collect()
    });
    for id in due {
        if let Err(err) = start_incarnation(id) {
            log::error!("cell {id}: restart failed: {err}");
            fail_start(id);
        }
    }
    table::purge_finished();
}

/// Cell exits finished by the sweep rather than by their `task_exit` event.
static SWEPT_EXITS: AtomicU64 = AtomicU64::new(0);

/// How many cell exits the sweep finished because their event was lost (for `events`).
pub fn swept_exits() -> u64 {
    SWEPT_EXITS.load(Ordering::Relaxed)
}

/// Stops a cell for good. A running cell's task is killed and its memory returned before
/// this returns. A cell still loading is only flagged: its task sees the flag when it is
/// about to attach, frees what it loaded and returns (killing it mid-load would strand the
/// heap memory its kernel stack owns).
pub fn stop(id: u64) -> Result<(), CellError> {
    let task = table::with(|cells| {
        let record = cells.get_mut(&id).ok_or(CellError::NoSuchCell(id))?;
        if record.is_finished() {
            return Err(CellError::AlreadyFinished(id));
        }
        record.stop_requested = true;
        record.restart_at_ms = None;
        let running = record.cell.state() == ::cell::lifecycle::Phase::Running;
        if record.task.is_some() && running {
            let _ = record.cell.stop(now_ms());
        }
        // Only a running (attached) cell's task is killed; a loading one stops itself.
        Ok(if running { record.task } else { None })
    })?;
    match task {
        Some(task) => {
            // The task may have ended on its own just now; either way it is gone after this.
            let cpu_ticks = sched::kill(task).unwrap_or(0);
            on_task_exit(task, &ExitReason::Killed, cpu_ticks);
        }
        // Loading: the task returns on its own and its exit is handled by the reactor.
        // No task at all (waiting out a restart backoff): finish the record now.
        None => table::with(|cells| {
            if let Some(record) = cells.get_mut(&id) {
                if record.task.is_none() && record.cell.state() != ::cell::lifecycle::Phase::Dead {
                    record.detach(CellExit::Killed, 0, now_ms());
                }
            }
        }),
    }
    // Stopped cells join the finished ones: keep only the most recent few.
    table::purge_finished();
    Ok(())
}

/// Stops a cell from taking new connections: every listener it holds closes its listening
/// sockets (connections already established stay; see `CellSocket::stop_listening`). The
/// first half of the control plane's graceful stop; the cell keeps running until `stop`.
pub fn quiesce(id: u64) -> Result<(), CellError> {
    table::with(|cells| {
        let record = cells.get_mut(&id).ok_or(CellError::NoSuchCell(id))?;
        if record.is_finished() {
            return Err(CellError::AlreadyFinished(id));
        }
        // No network: no listeners either.
        let _ = crate::netstack::with_stack(|stack| {
            for (_, socket) in record.io.fds.iter_mut() {
                socket.stop_listening(stack);
            }
        });
        Ok(())
    })
}

/// One row of `cell ls`.
pub struct CellRow {
    pub id: u64,
    pub payload: String,
    pub state: CellStatus,
    pub task: Option<TaskId>,
    pub restarts: u32,
    pub frames: u64,
    pub cpu_ticks: u64,
    pub uptime_ms: u64,
    pub last_exit: Option<CellExit>,
    /// TCP ports the running incarnation accepts connections on (its listeners).
    pub listening: Vec<u16>,
}

/// Every cell in the table.
pub fn list() -> Vec<CellRow> {
    let now = now_ms();
    table::with(|cells| {
        cells
            .values()
            .map(|c| CellRow {
                id: c.cell.id().0,
                payload: c.cell.spec().payload.clone(),
                state: c.status(),
                task: c.task,
                restarts: c.cell.restarts(),
                frames: c.cell.frames_held(),
                cpu_ticks: c.cell.cpu_ticks_total(),
                uptime_ms: if c.task.is_some() {
                    c.cell.uptime_ms(now)
                } else {
                    0
                },
                last_exit: c.cell.exit_reason(),
                listening: c
                    .io
                    .fds
                    .iter()
                    .filter_map(|(_, socket)| socket.listening_port())
                    .collect(),
            })
            .collect()
    })
}

/// The last `n` lines a cell wrote.
pub fn logs(id: u64, n: usize) -> Result<Vec<String>, CellError> {
    table::with(|cells| {
        cells
            .get(&id)
            .map(|c| c.log.last_lines(n))
            .ok_or(CellError::NoSuchCell(id))
    })
}

/// The status of a cell (for tests).
#[cfg(feature = "ktest")]
pub fn state_of(id: u64) -> Option<CellStatus> {
    table::with(|cells| cells.get(&id).map(CellRecord::status))
}
