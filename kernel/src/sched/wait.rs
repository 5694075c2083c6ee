//! Wait queues: where tasks block until a condition holds.
//!
//! The condition is checked and the task enqueued with interrupts masked, and wakers
//! (interrupt handlers or other tasks) can only run when interrupts are enabled, so on this
//! single-CPU kernel a wake-up can never slip between the check and the sleep.

use alloc::collections::VecDeque;
use spin::Mutex;

use super::TaskId;
use crate::arch::cpu::without_interrupts;

/// A queue of blocked tasks.
pub struct WaitQueue {
    waiters: Mutex<VecDeque<TaskId>>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> WaitQueue {
        WaitQueue {
            waiters: Mutex::new(VecDeque::new()),
        }
    }

    /// Blocks the current task until `condition` returns true. The condition runs with
    /// interrupts masked, so it must be short and must not block.
    pub fn wait_until(&self, mut condition: impl FnMut() -> bool) {
        without_interrupts(|| loop {
            if condition() {
                return;
            }
            let me = super::current_id();
            self.waiters.lock().push_back(me);
            super::block_current();
        });
    }

    /// Wakes the longest-waiting task, if any.
    pub fn wake_one(&self) {
        without_interrupts(|| {
            let next = self.waiters.lock().pop_front();
            if let Some(task) = next {
                super::wake(task);
            }
        });
    }

    /// Wakes every waiting task. The queue keeps its buffer, so steady wait/wake cycles
    /// do not touch the heap.
    pub fn wake_all(&self) {
        without_interrupts(|| {
            let mut waiters = self.waiters.lock();
            while let Some(task) = waiters.pop_front() {
                super::wake(task);
            }
        });
    }
}
