//! A mutex for task context that sleeps instead of spinning.
//!
//! The kernel's spin locks are taken with interrupts masked, which is right for short
//! critical sections shared with interrupt handlers. Some sections are long: the Raft
//! driver persists to a virtio-blk disk (a host `fdatasync` per flush) while it holds its
//! state. Holding a spin lock there would mask interrupts for milliseconds (no ticks, no
//! network), and a higher-priority task spinning on it would never let the holder finish.
//! [`Mutex`] is held with interrupts enabled; a task that finds it taken blocks on a wait
//! queue and is woken when the holder releases it, so the holder (whatever its priority)
//! gets the CPU. Never use it from an interrupt handler.

use core::ops::{Deref, DerefMut};

use super::wait::WaitQueue;

/// A sleeping mutex (see the module docs).
pub struct Mutex<T> {
    inner: spin::Mutex<T>,
    waiters: WaitQueue,
}

/// Proof of holding a [`Mutex`]; releasing it wakes the waiters.
pub struct MutexGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    waiters: &'a WaitQueue,
}

impl<T> Mutex<T> {
    /// A mutex holding `value`.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            inner: spin::Mutex::new(value),
            waiters: WaitQueue::new(),
        }
    }

    /// Takes the mutex, sleeping while another task holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        loop {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            // Checked with interrupts masked, so the holder's release (which wakes us)
            // cannot slip between the check and the sleep.
            self.waiters.wait_until(|| !self.inner.is_locked());
        }
    }

    /// Takes the mutex if it is free.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.inner.try_lock().map(|guard| MutexGuard {
            guard: Some(guard),
            waiters: &self.waiters,
        })
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard held until drop")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard held until drop")
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.waiters.wake_all();
    }
}
