//! Run-queue policy: strict priorities, round-robin within a priority.
//!
//! The scheduler asks two questions: "who runs next?" ([`RunQueue::pop_next`]) and "should
//! the running task give way?" ([`RunQueue::should_preempt`]). Priority 0 is the most
//! urgent. A task that used up its time slice goes to the back of its own level, so equal
//! tasks share the CPU; a lower level only runs when every higher one is empty. The idle
//! task is not queued: it runs when the queue is empty.

use alloc::collections::VecDeque;

/// Number of priority levels.
pub const PRIORITY_LEVELS: usize = 4;

/// A task priority, 0 (highest) to `PRIORITY_LEVELS - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Priority(u8);

impl Priority {
    /// Control-plane and interactive work.
    pub const HIGH: Priority = Priority(0);
    /// The default for kernel services.
    pub const NORMAL: Priority = Priority(1);
    /// Cells.
    pub const CELL: Priority = Priority(2);
    /// Background work.
    pub const LOW: Priority = Priority(3);

    /// A priority from its number; `None` if out of range.
    pub fn new(level: u8) -> Option<Priority> {
        (usize::from(level) < PRIORITY_LEVELS).then_some(Priority(level))
    }

    /// The level number.
    pub fn level(self) -> u8 {
        self.0
    }
}

/// Ready tasks by priority, each level FIFO.
#[derive(Debug)]
pub struct RunQueue<T> {
    levels: [VecDeque<T>; PRIORITY_LEVELS],
}

impl<T: Copy + PartialEq> Default for RunQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + PartialEq> RunQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        RunQueue {
            levels: core::array::from_fn(|_| VecDeque::new()),
        }
    }

    /// An empty queue with room for `tasks` ready tasks on every level, so pushing never
    /// allocates (the scheduler's memory use stays constant).
    pub fn with_capacity(tasks: usize) -> Self {
        RunQueue {
            levels: core::array::from_fn(|_| VecDeque::with_capacity(tasks)),
        }
    }

    /// Makes a task ready, at the back of its level.
    pub fn push(&mut self, task: T, priority: Priority) {
        debug_assert!(!self.contains(task), "task queued twice");
        self.levels[usize::from(priority.0)].push_back(task);
    }

    /// Takes the next task to run: the front of the highest non-empty level.
    pub fn pop_next(&mut self) -> Option<T> {
        self.levels.iter_mut().find_map(VecDeque::pop_front)
    }

    /// Removes a task wherever it is queued; returns whether it was.
    pub fn remove(&mut self, task: T) -> bool {
        for level in &mut self.levels {
            if let Some(pos) = level.iter().position(|&t| t == task) {
                level.remove(pos);
                return true;
            }
        }
        false
    }

    /// Whether a task is queued.
    pub fn contains(&self, task: T) -> bool {
        self.levels.iter().any(|l| l.contains(&task))
    }

    /// Ready tasks, all levels.
    pub fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    /// Whether no task is ready.
    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(VecDeque::is_empty)
    }

    /// Whether a task running at `running` should give way now: a strictly more urgent task
    /// is ready, or its slice is used up and a task of equal or higher urgency is ready.
    pub fn should_preempt(&self, running: Priority, slice_expired: bool) -> bool {
        let best = self.levels.iter().position(|l| !l.is_empty());
        match best {
            None => false,
            Some(level) if level < usize::from(running.0) => true,
            Some(level) => slice_expired && level <= usize::from(running.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_runs_first_and_levels_are_fifo() {
        let mut q = RunQueue::new();
        q.push(1, Priority::LOW);
        q.push(2, Priority::NORMAL);
        q.push(3, Priority::NORMAL);
        q.push(4, Priority::HIGH);
        assert_eq!(q.len(), 4);
        let order: alloc::vec::Vec<_> = core::iter::from_fn(|| q.pop_next()).collect();
        assert_eq!(order, [4, 2, 3, 1]);
        assert!(q.is_empty());
    }

    #[test]
    fn round_robin_within_a_level() {
        let mut q = RunQueue::new();
        for t in [1, 2, 3] {
            q.push(t, Priority::CELL);
        }
        let mut ran = alloc::vec::Vec::new();
        for _ in 0..6 {
            let t = q.pop_next().unwrap();
            ran.push(t);
            q.push(t, Priority::CELL); // slice used up: back of the line
        }
        assert_eq!(ran, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn preemption_rules() {
        let mut q = RunQueue::new();
        assert!(
            !q.should_preempt(Priority::NORMAL, true),
            "nothing ready: keep running"
        );
        q.push(9, Priority::LOW);
        assert!(
            !q.should_preempt(Priority::NORMAL, true),
            "a less urgent task never preempts"
        );
        q.push(8, Priority::NORMAL);
        assert!(
            !q.should_preempt(Priority::NORMAL, false),
            "equal priority waits for the slice"
        );
        assert!(
            q.should_preempt(Priority::NORMAL, true),
            "equal priority gets the CPU after the slice"
        );
        q.push(7, Priority::HIGH);
        assert!(
            q.should_preempt(Priority::NORMAL, false),
            "a more urgent task preempts at once"
        );
    }

    #[test]
    fn remove_finds_tasks_on_any_level() {
        let mut q = RunQueue::new();
        q.push(1, Priority::HIGH);
        q.push(2, Priority::LOW);
        assert!(q.remove(2));
        assert!(!q.remove(2));
        assert!(!q.contains(2) && q.contains(1));
    }

    #[test]
    fn priority_range_is_checked() {
        assert_eq!(Priority::new(3), Some(Priority::LOW));
        assert_eq!(Priority::new(4), None);
    }
}
