//! Task wakers and blocking with a deadline: what cells' socket calls block on.
//!
//! [`current_waker`] is a `core::task::Waker` that makes one task ready. It is the task id
//! carried in the waker's data word, with a static vtable: cloning, waking and dropping it
//! touch no heap memory, so a waker parked in a smoltcp socket never owns anything, and a
//! task killed while it waits leaves nothing behind. Waking a task that has exited (ids are
//! never reused) or is not blocked is a no-op, as for wait queues.
//!
//! [`block_current_until`] blocks the running task until a waker (or any `wake`) makes it
//! ready, or until the deadline passes. Callers check their condition and block inside one
//! interrupts-masked section, and wakers run only from code that interrupts or other tasks
//! run, so on this single CPU a wake-up cannot slip between the check and the block. Wake-ups
//! may be spurious: callers re-check in a loop.

use core::task::{RawWaker, RawWakerVTable, Waker};

use super::{with_sched, TaskId, TaskState};
use crate::time;

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop_waker);

fn raw(id: TaskId) -> RawWaker {
    // The data word is the task id itself, never dereferenced.
    RawWaker::new(core::ptr::without_provenance(id as usize), &VTABLE)
}

fn id_of(data: *const ()) -> TaskId {
    data.addr() as TaskId
}

fn clone(data: *const ()) -> RawWaker {
    raw(id_of(data))
}

fn wake(data: *const ()) {
    super::wake(id_of(data));
}

fn drop_waker(_data: *const ()) {}

/// A waker that makes the running task ready.
pub fn current_waker() -> Waker {
    let id = super::current_id();
    // SAFETY: the vtable's functions uphold the RawWaker contract trivially: the data word
    // is a plain integer (the task id) that is never dereferenced, so clone copies it, drop
    // does nothing, and wake may run on any task or in an interrupt handler (it only takes
    // the scheduler lock with interrupts masked, as every scheduler entry does).
    unsafe { Waker::from_raw(raw(id)) }
}

/// Blocks the running task until it is woken or `deadline_us` (monotonic) passes; `None`
/// waits for a wake-up only. Interrupts must be masked (see the module docs). Returns at
/// once if the deadline has passed.
pub fn block_current_until(deadline_us: Option<u64>) {
    debug_assert!(!x86_64::instructions::interrupts::are_enabled());
    if let Some(deadline) = deadline_us {
        if time::now_us() >= deadline {
            return;
        }
        // The tick wakes sleepers whose deadline passed; `wake` takes the entry out.
        with_sched(|s| {
            let current = s.current;
            s.sleepers.insert((deadline, current));
        });
    }
    super::switch_away(TaskState::Blocked);
    // Woken before the deadline: the entry is gone already (wake removes it); after it, the
    // tick removed it. Either way no stale entry can wake this task later.
    debug_assert!(with_sched(|s| {
        let current = s.current;
        !s.sleepers.iter().any(|&(_, t)| t == current)
    }));
}
