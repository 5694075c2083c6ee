//! Kernel stacks and the context switch.
//!
//! A task's context is just its saved stack pointer: [`switch`] pushes the callee-saved
//! registers (RBX, RBP, R12–R15) on the old stack, stores RSP, loads the new RSP and pops
//! the new task's registers. Everything else the interrupted code can observe is already
//! saved by the time `switch` runs: caller-saved registers by the compiler at the call (or
//! by the interrupt entry when the timer preempts), RIP/RFLAGS/RSP/CS/SS by the CPU's
//! interrupt frame. The kernel and the payloads are built for `x86_64-unknown-none`, which
//! uses no SSE or x87 registers, so there is no FPU state to save.
//!
//! A new context starts at an entry function with RBP = 0 and a zero return address, so
//! backtraces end cleanly at the bottom of every task.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// Default kernel stack size.
pub const STACK_BYTES: usize = 32 * 1024;

/// A kernel stack, owned: dropping it frees the memory.
pub struct KernelStack {
    // u128 elements make the allocation 16-byte aligned, as the ABI wants.
    memory: Box<[u128]>,
}

impl KernelStack {
    /// Allocates a zeroed stack of `bytes` (rounded up to 16); `None` when the heap cannot
    /// hold it, so running out of memory refuses a task instead of panicking.
    pub fn try_new(bytes: usize) -> Option<KernelStack> {
        assert!(bytes >= 4096, "kernel stack of {bytes} bytes is too small");
        let mut memory = Vec::new();
        memory.try_reserve_exact(bytes.div_ceil(16)).ok()?;
        memory.resize(bytes.div_ceil(16), 0u128);
        Some(KernelStack {
            memory: memory.into_boxed_slice(),
        })
    }

    /// One past the highest address (16-byte aligned).
    pub fn top(&self) -> u64 {
        let base = self.memory.as_ptr() as u64;
        let top = base + (self.memory.len() * 16) as u64;
        debug_assert!(top.is_multiple_of(16));
        top
    }
}

/// A saved execution context: the stack pointer of a switched-out task. Atomic so the
/// scheduler can hand out shared references to it and still let `switch` write it.
#[derive(Debug)]
pub struct Context {
    rsp: AtomicU64,
}

impl Context {
    /// An empty context: for code already running (the boot path), which gets its value
    /// the first time it is switched away from, or a table slot not yet in use.
    pub const fn empty() -> Context {
        Context {
            rsp: AtomicU64::new(0),
        }
    }

    /// Prepares this context so that, when switched to, it starts `entry` on `stack`.
    pub fn reset(&self, stack: &mut KernelStack, entry: extern "C" fn() -> !) {
        let top = stack.top();
        // From the new RSP upwards: r15 r14 r13 r12 rbx rbp (all 0), the address `ret`
        // jumps to, then a zero "return address" for the entry function's own frame.
        let frame: [u64; 8] = [0, 0, 0, 0, 0, 0, entry as usize as u64, 0];
        let slots = stack.memory.len();
        // 8 u64 slots = 4 u128 elements at the top of the stack.
        for (i, pair) in frame.chunks(2).enumerate() {
            stack.memory[slots - 4 + i] = u128::from(pair[0]) | (u128::from(pair[1]) << 64);
        }
        let rsp = top - 64;
        // After `ret` pops the entry address, RSP = top - 8, which is 8 mod 16: exactly what
        // the SysV ABI expects at a function's first instruction.
        debug_assert!((rsp + 56) % 16 == 8);
        self.rsp.store(rsp, Ordering::Release);
    }
}

/// Saves the current context into `from` and resumes `to`. Returns when something later
/// switches back to `from`.
///
/// # Safety
///
/// 1. Interrupts are disabled (so nothing observes a half-switched state).
/// 2. `to` holds a context built by [`Context::new`] on a stack that is still allocated, or
///    saved by an earlier `switch` whose task has not been resumed since (a context is resumed
///    at most once per save).
/// 3. `to`'s stack is freed only after its task has exited and another task is running (the
///    scheduler's `reap` keeps this).
pub unsafe fn switch(from: &Context, to: &Context) {
    debug_assert!(
        !x86_64::instructions::interrupts::are_enabled(),
        "switch with interrupts on"
    );
    let load = to.rsp.load(Ordering::Acquire);
    assert!(
        load != 0,
        "switch to a context that was never saved or built"
    );
    // SAFETY: `from.rsp` is a valid, live place to store RSP (we hold a reference to it);
    // `load` was produced by `Context::new` on a live stack or by a previous save in this
    // function (the caller's contract, points 2 and 3). Interrupts are off (point 1), so the
    // switch is atomic.
    unsafe { switch_context(from.rsp.as_ptr(), load) }
}

#[unsafe(naked)]
unsafe extern "C" fn switch_context(save_rsp: *mut u64, load_rsp: u64) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}
