//! The preemptive scheduler: kernel tasks, time slices, sleeping, blocking, exit and kill.
//!
//! Mechanism and policy are apart: the context switch is `arch::switch`, the queue policy
//! (strict priorities, round-robin inside a level) is `kcore::run_queue`, load averaging is
//! `kcore::load`. This module holds the task table and the rules that tie them together.
//!
//! Rules that keep it sound on one CPU:
//! 1. Scheduler state is touched only with interrupts masked (`with_sched`).
//! 2. The switch happens after the lock is released but before interrupts come back, so
//!    nothing runs between "decided" and "switched".
//! 3. Saved contexts live in a static table indexed by slot, so no reference into a task
//!    that might be freed is held across a switch.
//! 4. A task's stack is freed only when that task has exited and is not the one running:
//!    an exiting task parks itself on `dead`, and whoever runs next reaps it.
//!
//! Kernel stacks are recycled: an ended task's stack goes back to a small pool
//! ([`STACK_POOL_MAX`], filled at boot by [`fill_stack_pool`]) and the next task takes it
//! without allocating or zeroing 32 KiB (about 60-80 µs of a cell's start under TCG). A
//! recycled stack still holds its previous task's old frames. That is not a leak: kernel
//! stacks are never mapped in a cell's half of the address space, and safe Rust never reads
//! memory it did not write (the same holds for every heap block the allocator hands out
//! again, none of which is zeroed either). With the pool full at boot, the heap a quiet node
//! uses is the same before and after any number of tasks came and went.
//!
//! Ground truth for the control plane is published in atomics (runnable count, load
//! averages, context switches) that any context can read without a lock.

pub mod mutex;
pub mod wait;
pub mod waker;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kcore::load::{LoadAverage, SAMPLE_MS};
use kcore::run_queue::{Priority, RunQueue};
use spin::Mutex;

use crate::arch::cpu::{self, without_interrupts};
use crate::arch::switch::{self, Context, KernelStack, STACK_BYTES};
use crate::arch::syscall;
use crate::events::{self, EventKind, ExitReason};
use crate::mm::address_space;
use crate::time;

/// A task's identity; never reused.
pub type TaskId = u64;

/// Timer ticks a task runs before an equal-priority task gets the CPU.
pub const SLICE_TICKS: u32 = 10;
/// Most tasks that can exist at once (contexts live in a fixed table).
pub const MAX_TASKS: usize = 256;
/// The idle task: the boot context, which halts whenever nothing else is ready.
pub const IDLE_TASK: TaskId = 0;
/// Longest task name.
pub const NAME_MAX_BYTES: usize = 24;
/// Kernel stacks kept for reuse by the next tasks (4 × 32 KiB of heap).
pub const STACK_POOL_MAX: usize = 4;

/// Ended tasks' stacks, ready for the next tasks (at most [`STACK_POOL_MAX`]). Locked with
/// interrupts masked; its buffer is reserved once, so returning a stack never allocates.
static STACK_POOL: Mutex<Vec<KernelStack>> = Mutex::new(Vec::new());

/// A stack for a new task: a recycled one, else a fresh zeroed one (`None`: no heap).
fn take_stack() -> Option<KernelStack> {
    without_interrupts(|| STACK_POOL.lock().pop()).or_else(|| KernelStack::try_new(STACK_BYTES))
}

/// Keeps a stack for the next task, or frees it when the pool is full.
fn recycle_stack(stack: KernelStack) {
    let spare = without_interrupts(|| {
        let mut pool = STACK_POOL.lock();
        if pool.len() < STACK_POOL_MAX && pool.capacity() > pool.len() {
            pool.push(stack);
            None
        } else {
            Some(stack)
        }
    });
    // Freed outside the lock.
    drop(spare);
}

/// Fills the stack pool (call once, after the boot's own tasks started, so a quiet node's
/// heap holds exactly [`STACK_POOL_MAX`] spare stacks). Short of heap, it fills what it can.
pub fn fill_stack_pool() {
    if without_interrupts(|| STACK_POOL.lock().try_reserve_exact(STACK_POOL_MAX)).is_err() {
        return;
    }
    while without_interrupts(|| STACK_POOL.lock().len()) < STACK_POOL_MAX {
        match KernelStack::try_new(STACK_BYTES) {
            Some(stack) => without_interrupts(|| STACK_POOL.lock().push(stack)),
            None => return,
        }
    }
}

/// Spare stacks in the pool (for tests).
#[cfg(feature = "ktest")]
pub fn pooled_stacks() -> usize {
    without_interrupts(|| STACK_POOL.lock().len())
}

/// Period of `tick` events: the resolution of protocol timers (SWIM probes, Raft ticks).
pub const TICK_EVENT_MS: u64 = 10;

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Ready,
    Running,
    Sleeping,
    Blocked,
    Exited,
}

impl TaskState {
    /// The name `ps` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Sleeping => "sleeping",
            TaskState::Blocked => "blocked",
            TaskState::Exited => "exited",
        }
    }
}

/// Who a task belongs to, which decides who may end it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskClass {
    /// The kernel's own work (idle, shell, reactor, net, …): never killed from the shell.
    Kernel,
    /// A cell's task: ended through the cell table (`cell stop`), never directly.
    Cell,
    /// A test task started from the shell (`spawn`): `kill` may end it.
    Shell,
}

impl TaskClass {
    /// The name `ps` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskClass::Kernel => "kernel",
            TaskClass::Cell => "cell",
            TaskClass::Shell => "shell",
        }
    }
}

struct Task {
    name: String,
    class: TaskClass,
    priority: Priority,
    state: TaskState,
    slot: usize,
    cpu_ticks: u64,
    slice_left: u32,
    stack: Option<KernelStack>,
    entry: Option<Entry>,
    /// The task's page tables (a cell's address space), or 0 for the kernel's.
    cr3: u64,
}

/// What a new task runs.
enum Entry {
    /// A closure. Its box is freed when it returns, so a task that never returns (one
    /// that is killed, or drops to ring 3) keeps it: use [`Entry::Plain`] for those.
    Boxed(Box<dyn FnOnce() + Send>),
    /// A function and its argument: nothing on the heap.
    Plain(fn(u64), u64),
}

struct Scheduler {
    tasks: BTreeMap<TaskId, Task>,
    ready: RunQueue<TaskId>,
    sleepers: BTreeSet<(u64, TaskId)>,
    current: TaskId,
    next_id: TaskId,
    free_slots: Vec<usize>,
    dead: Vec<Task>,
    load: LoadAverage,
}

static SCHED: Mutex<Option<Scheduler>> = Mutex::new(None);
/// Told of every task's end before anything else is (see [`set_exit_hook`]).
static EXIT_HOOK: spin::Once<ExitHook> = spin::Once::new();

/// A function told of a task's end: (task, reason, CPU ticks used).
pub type ExitHook = fn(TaskId, &ExitReason, u64);
static CONTEXTS: [Context; MAX_TASKS] = [const { Context::empty() }; MAX_TASKS];
static NEED_RESCHED: AtomicBool = AtomicBool::new(false);
static RUNNABLE: AtomicU64 = AtomicU64::new(0);
static LOAD_1S_MILLI: AtomicU64 = AtomicU64::new(0);
static LOAD_10S_MILLI: AtomicU64 = AtomicU64::new(0);
static SWITCHES: AtomicU64 = AtomicU64::new(0);

fn with_sched<R>(f: impl FnOnce(&mut Scheduler) -> R) -> R {
    without_interrupts(|| {
        f(SCHED
            .lock()
            .as_mut()
            .expect("scheduler used before sched::init"))
    })
}

/// Why a spawn was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// All [`MAX_TASKS`] slots are in use.
    TooManyTasks,
    /// The name is empty or longer than [`NAME_MAX_BYTES`].
    BadName,
    /// No heap for the task's kernel stack.
    OutOfMemory,
}

/// Why a kill was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum KillError {
    NoSuchTask,
    /// The idle task and the caller itself cannot be killed.
    Protected(&'static str),
    /// A kernel task (the reactor, the network…): the node needs it.
    KernelTask {
        name: String,
    },
    /// A cell's task: stop the cell instead, so its table entry and memory go with it.
    CellTask,
}

/// Turns the running boot context into the idle task. Call once, before interrupts.
pub fn init() {
    let mut tasks = BTreeMap::new();
    tasks.insert(IDLE_TASK, idle_task());
    let scheduler = Scheduler {
        tasks,
        ready: RunQueue::with_capacity(MAX_TASKS),
        sleepers: BTreeSet::new(),
        current: IDLE_TASK,
        next_id: IDLE_TASK + 1,
        free_slots: (1..MAX_TASKS).rev().collect(),
        dead: Vec::with_capacity(MAX_TASKS),
        load: LoadAverage::default(),
    };
    *SCHED.lock() = Some(scheduler);
}

fn idle_task() -> Task {
    Task {
        name: String::from("idle"),
        class: TaskClass::Kernel,
        priority: Priority::LOW,
        state: TaskState::Running,
        slot: 0,
        cpu_ticks: 0,
        slice_left: SLICE_TICKS,
        stack: None,
        entry: None,
        cr3: 0,
    }
}

/// Runs the idle loop on the boot context forever.
pub fn run_idle() -> ! {
    loop {
        reschedule_if_needed();
        // Idle time zeroes freed frames for later allocations, one frame per round so a
        // task that became ready waits at most one frame; with none left to zero, halt.
        if !crate::mm::frames::prezero_one() {
            cpu::enable_interrupts_and_halt();
        }
    }
}

/// Starts a kernel task (class [`TaskClass::Kernel`]) running `f`.
pub fn spawn(
    name: &str,
    priority: Priority,
    f: impl FnOnce() + Send + 'static,
) -> Result<TaskId, SpawnError> {
    spawn_entry(name, priority, TaskClass::Kernel, Entry::Boxed(Box::new(f)))
}

/// Starts a cell's task (class [`TaskClass::Cell`]) running `f(arg)`, with no heap
/// allocation for the entry: a cell may never return (it enters ring 3 and ends by exit,
/// fault or kill).
pub fn spawn_fn(
    name: &str,
    priority: Priority,
    f: fn(u64),
    arg: u64,
) -> Result<TaskId, SpawnError> {
    spawn_entry(name, priority, TaskClass::Cell, Entry::Plain(f, arg))
}

/// Starts a task of `class` running `f(arg)` (no heap allocation for the entry).
pub fn spawn_class_fn(
    name: &str,
    priority: Priority,
    class: TaskClass,
    f: fn(u64),
    arg: u64,
) -> Result<TaskId, SpawnError> {
    spawn_entry(name, priority, class, Entry::Plain(f, arg))
}

fn spawn_entry(
    name: &str,
    priority: Priority,
    class: TaskClass,
    entry: Entry,
) -> Result<TaskId, SpawnError> {
    if name.is_empty() || name.len() > NAME_MAX_BYTES {
        return Err(SpawnError::BadName);
    }
    // A full task table is refused before a stack is allocated for nothing.
    if with_sched(|s| s.free_slots.is_empty()) {
        return Err(SpawnError::TooManyTasks);
    }
    let mut stack = take_stack().ok_or(SpawnError::OutOfMemory)?;
    let mut stack_back = None;
    let id = with_sched(|s| {
        let Some(slot) = s.free_slots.pop() else {
            stack_back = Some(stack);
            return Err(SpawnError::TooManyTasks);
        };
        CONTEXTS[slot].reset(&mut stack, task_entry);
        let id = s.next_id;
        s.next_id += 1;
        let task = Task {
            name: String::from(name),
            class,
            priority,
            state: TaskState::Ready,
            slot,
            cpu_ticks: 0,
            slice_left: SLICE_TICKS,
            stack: Some(stack),
            entry: Some(entry),
            cr3: 0,
        };
        s.tasks.insert(id, task);
        s.ready.push(id, priority);
        note_wakeup(s, priority);
        publish(s);
        Ok(id)
    });
    if let Some(stack) = stack_back {
        recycle_stack(stack);
    }
    id
}

extern "C" fn task_entry() -> ! {
    finish_switch();
    let entry = with_sched(|s| {
        let current = s.current;
        s.tasks
            .get_mut(&current)
            .expect("running task is in the table")
            .entry
            .take()
    });
    cpu::enable_interrupts();
    match entry {
        Some(Entry::Boxed(f)) => f(),
        Some(Entry::Plain(f, arg)) => f(arg),
        None => {}
    }
    exit(ExitReason::Exited(0))
}

/// Gives the running task its own page tables (a cell's), loading them now and on every
/// later switch to it.
///
/// # Safety
///
/// `cr3` is the [`address_space::AddressSpace::cr3`] of a space the caller keeps alive until
/// this task is gone (exited or killed), since the scheduler loads it on every switch back.
pub unsafe fn set_address_space(cr3: u64) {
    without_interrupts(|| {
        with_sched(|s| {
            let current = s.current;
            s.tasks
                .get_mut(&current)
                .expect("running task is in the table")
                .cr3 = cr3;
        });
        // SAFETY: the caller keeps the space alive while this task can run (this function's
        // contract), which covers now.
        unsafe { address_space::activate(cr3) };
    });
}

/// The running task's id.
pub fn current_id() -> TaskId {
    with_sched(|s| s.current)
}

/// Gives the CPU to another ready task of equal or higher priority, if any.
pub fn yield_now() {
    without_interrupts(|| switch_away(TaskState::Ready));
}

/// Sleeps until the monotonic clock reaches `deadline_us`.
pub fn sleep_until_us(deadline_us: u64) {
    without_interrupts(|| {
        if time::now_us() >= deadline_us {
            return;
        }
        with_sched(|s| {
            let current = s.current;
            s.sleepers.insert((deadline_us, current));
        });
        switch_away(TaskState::Sleeping);
    });
}

/// Sleeps for `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    sleep_until_us(time::now_us() + ms * 1000);
}

/// Registers the function told of every task's end (once; the cell table uses it to
/// record a cell's end in the table itself, so the end is never carried by the bounded
/// event queue alone). It runs with interrupts masked, in the ending task's context (exit)
/// or the killer's (kill), before the `task_exit` event is queued; it must not block.
pub fn set_exit_hook(hook: ExitHook) {
    EXIT_HOOK.call_once(|| hook);
}

/// Ends the running task.
pub fn exit(reason: ExitReason) -> ! {
    // One masked stretch from the hook to the switch: no other task can run while this one
    // is recorded as ended but still on the CPU with its own page tables loaded.
    without_interrupts(|| {
        let (id, name, cpu_ticks) = with_sched(|s| {
            let t = &s.tasks[&s.current];
            (s.current, events::TaskName::new(&t.name), t.cpu_ticks)
        });
        assert!(id != IDLE_TASK, "the idle task cannot exit");
        if let Some(hook) = EXIT_HOOK.get() {
            hook(id, &reason, cpu_ticks);
        }
        events::push(EventKind::TaskExit {
            task: id,
            name,
            reason,
            cpu_ticks,
        });
        switch_away(TaskState::Exited);
    });
    unreachable!("an exited task was resumed");
}

/// Ends another task. Its stack and bookkeeping are freed at once. Returns the CPU ticks
/// it had used.
pub fn kill(id: TaskId) -> Result<u64, KillError> {
    let killed = with_sched(|s| {
        if id == IDLE_TASK {
            return Err(KillError::Protected("it is the idle task"));
        }
        if id == s.current {
            return Err(KillError::Protected("a task cannot kill itself"));
        }
        let task = s.tasks.remove(&id).ok_or(KillError::NoSuchTask)?;
        s.ready.remove(id);
        s.sleepers.retain(|&(_, t)| t != id);
        s.free_slots.push(task.slot);
        publish(s);
        Ok(task)
    })?;
    let (name, cpu_ticks) = (events::TaskName::new(&killed.name), killed.cpu_ticks);
    let mut killed = killed;
    if let Some(stack) = killed.stack.take() {
        recycle_stack(stack);
    }
    drop(killed);
    if let Some(hook) = EXIT_HOOK.get() {
        without_interrupts(|| hook(id, &ExitReason::Killed, cpu_ticks));
    }
    events::push(EventKind::TaskExit {
        task: id,
        name,
        reason: ExitReason::Killed,
        cpu_ticks,
    });
    Ok(cpu_ticks)
}

/// Ends a task on an operator's request (`kill` at the shell): only tasks the shell started
/// (class [`TaskClass::Shell`]). The kernel's own tasks are refused with their name, and a
/// cell's task is refused so the cell is stopped through its table (`cell stop`).
pub fn kill_shell_task(id: TaskId) -> Result<u64, KillError> {
    let class = with_sched(|s| {
        s.tasks
            .get(&id)
            .map(|t| (t.class, t.name.clone()))
            .ok_or(KillError::NoSuchTask)
    })?;
    match class {
        (TaskClass::Shell, _) => kill(id),
        (TaskClass::Cell, _) => Err(KillError::CellTask),
        (TaskClass::Kernel, _) if id == IDLE_TASK => {
            Err(KillError::Protected("it is the idle task"))
        }
        (TaskClass::Kernel, name) => Err(KillError::KernelTask { name }),
    }
}

/// Blocks the running task (a wait queue already holds its id). Interrupts must be masked.
fn block_current() {
    debug_assert!(!x86_64::instructions::interrupts::are_enabled());
    switch_away(TaskState::Blocked);
}

/// Makes a blocked or sleeping task ready. Unknown or already-ready ids are ignored (a
/// wait queue may still name a task that was killed).
fn wake(id: TaskId) {
    with_sched(|s| {
        let Some(task) = s.tasks.get_mut(&id) else {
            return;
        };
        if !matches!(task.state, TaskState::Blocked | TaskState::Sleeping) {
            return;
        }
        task.state = TaskState::Ready;
        let priority = task.priority;
        s.sleepers.retain(|&(_, t)| t != id);
        s.ready.push(id, priority);
        note_wakeup(s, priority);
        publish(s);
    });
}

fn note_wakeup(s: &Scheduler, priority: Priority) {
    let running = &s.tasks[&s.current];
    if s.current == IDLE_TASK || priority < running.priority {
        NEED_RESCHED.store(true, Ordering::Relaxed);
    }
}

/// Timer interrupt: CPU accounting, wake-ups, load sampling, time slices.
pub fn on_tick() {
    let now_us = time::now_us();
    let ticks = time::ticks();
    with_sched(|s| {
        let current = s.current;
        let task = s
            .tasks
            .get_mut(&current)
            .expect("running task is in the table");
        task.cpu_ticks += 1;
        task.slice_left = task.slice_left.saturating_sub(1);
        let (priority, expired) = (task.priority, task.slice_left == 0);
        while let Some(&(deadline, id)) = s.sleepers.first() {
            if deadline > now_us {
                break;
            }
            s.sleepers.pop_first();
            if let Some(t) = s.tasks.get_mut(&id) {
                t.state = TaskState::Ready;
                let p = t.priority;
                s.ready.push(id, p);
            }
        }
        if ticks.is_multiple_of(SAMPLE_MS * time::TICK_HZ / 1000) {
            let runnable = s.ready.len() as u64 + u64::from(current != IDLE_TASK);
            s.load.sample(runnable);
        }
        let preempt = if current == IDLE_TASK {
            !s.ready.is_empty()
        } else {
            s.ready.should_preempt(priority, expired)
        };
        if preempt {
            NEED_RESCHED.store(true, Ordering::Relaxed);
        }
        publish(s);
    });
    if ticks.is_multiple_of(TICK_EVENT_MS * time::TICK_HZ / 1000) {
        events::push(EventKind::Tick { ticks });
    }
}

/// Interrupt exit: switch if the interrupt made a more deserving task ready.
pub fn reschedule_if_needed() {
    if NEED_RESCHED.swap(false, Ordering::Relaxed) {
        without_interrupts(|| switch_away(TaskState::Ready));
    }
}

/// Puts the running task in `state` and switches to the next ready task (or idle).
/// Interrupts must be masked by the caller.
fn switch_away(state: TaskState) {
    let switch_slots = {
        let mut guard = SCHED.lock();
        let s = guard.as_mut().expect("scheduler used before sched::init");
        choose_next(s, state)
    };
    if let Some(Switch {
        from,
        to,
        stack_top,
        cr3,
    }) = switch_slots
    {
        SWITCHES.fetch_add(1, Ordering::Relaxed);
        if let Some(top) = stack_top {
            syscall::set_task_kernel_stack(top);
        }
        let cr3 = if cr3 == 0 {
            address_space::kernel_cr3()
        } else {
            cr3
        };
        // SAFETY: a task's `cr3` is the kernel's or one given to `set_address_space`, whose
        // caller keeps the space alive while the task can run; `to` is ready, so it can.
        unsafe { address_space::activate(cr3) };
        // SAFETY: interrupts are masked (this function's contract); `to` is a ready task, so
        // its context was built by `Context::new` or saved by its last switch away and not
        // resumed since; stacks are freed only by `reap`, after their task exited.
        unsafe { switch::switch(&CONTEXTS[from], &CONTEXTS[to]) };
        finish_switch();
    }
}

/// What the switch needs to know about the next task.
struct Switch {
    from: usize,
    to: usize,
    stack_top: Option<u64>,
    cr3: u64,
}

fn choose_next(s: &mut Scheduler, state: TaskState) -> Option<Switch> {
    let prev = s.current;
    let prev_slot = s.tasks[&prev].slot;
    match state {
        TaskState::Ready if prev != IDLE_TASK => {
            let task = s
                .tasks
                .get_mut(&prev)
                .expect("running task is in the table");
            if task.slice_left == 0 {
                task.slice_left = SLICE_TICKS;
            }
            let priority = task.priority;
            s.ready.push(prev, priority);
        }
        TaskState::Exited => {
            let task = s.tasks.remove(&prev).expect("running task is in the table");
            s.dead.push(task);
        }
        _ => {}
    }
    let next = s.ready.pop_next().unwrap_or(IDLE_TASK);
    if let Some(task) = s.tasks.get_mut(&prev) {
        task.state = if prev == IDLE_TASK {
            TaskState::Ready
        } else {
            state
        };
    }
    let next_task = s.tasks.get_mut(&next).expect("ready task is in the table");
    next_task.state = TaskState::Running;
    let switch = Switch {
        from: prev_slot,
        to: next_task.slot,
        stack_top: next_task.stack.as_ref().map(KernelStack::top),
        cr3: next_task.cr3,
    };
    s.current = next;
    publish(s);
    (next != prev).then_some(switch)
}

/// Runs on the new task right after every switch: frees tasks that exited. One at a time,
/// so the `dead` list keeps its capacity and the stacks are freed outside the lock.
fn finish_switch() {
    loop {
        let task = with_sched(|s| {
            let task = s.dead.pop()?;
            s.free_slots.push(task.slot);
            Some(task)
        });
        match task {
            Some(mut task) => {
                if let Some(stack) = task.stack.take() {
                    recycle_stack(stack);
                }
                drop(task);
            }
            None => break,
        }
    }
}

fn publish(s: &Scheduler) {
    let runnable = s.ready.len() as u64 + u64::from(s.current != IDLE_TASK);
    RUNNABLE.store(runnable, Ordering::Relaxed);
    LOAD_1S_MILLI.store(s.load.load_1s_milli(), Ordering::Relaxed);
    LOAD_10S_MILLI.store(s.load.load_10s_milli(), Ordering::Relaxed);
}

/// One row of `ps`.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    pub id: TaskId,
    pub name: String,
    pub state: TaskState,
    pub priority: u8,
    pub cpu_ticks: u64,
    pub class: TaskClass,
}

/// CPU ticks a live task has used so far (`None` once it exited and was reaped): the
/// control plane turns the cells' ticks into a per-service load for the autoscaler.
pub fn cpu_ticks_of(id: TaskId) -> Option<u64> {
    with_sched(|s| s.tasks.get(&id).map(|t| t.cpu_ticks))
}

/// Every task, by id.
pub fn tasks() -> Vec<TaskInfo> {
    with_sched(|s| {
        s.tasks
            .iter()
            .map(|(&id, t)| TaskInfo {
                id,
                name: t.name.clone(),
                state: t.state,
                priority: t.priority.level(),
                cpu_ticks: t.cpu_ticks,
                class: t.class,
            })
            .collect()
    })
}

/// Whether a task exists (not exited and reaped).
pub fn exists(id: TaskId) -> bool {
    with_sched(|s| s.tasks.contains_key(&id))
}

/// Ground-truth load figures, lock-free.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub runnable: u64,
    pub load_1s_milli: u64,
    pub load_10s_milli: u64,
    pub context_switches: u64,
}

/// The current load figures (no lock; safe in any context).
pub fn load() -> Load {
    Load {
        runnable: RUNNABLE.load(Ordering::Relaxed),
        load_1s_milli: LOAD_1S_MILLI.load(Ordering::Relaxed),
        load_10s_milli: LOAD_10S_MILLI.load(Ordering::Relaxed),
        context_switches: SWITCHES.load(Ordering::Relaxed),
    }
}
