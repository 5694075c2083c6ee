//! Small CPU primitives: the time-stamp counter, halting, interrupt masking, frame pointer.

use core::arch::asm;

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Halts until the next interrupt, with interrupts enabled atomically (`sti; hlt`), so a
/// wake-up that arrives between the caller's check and the halt is not lost.
#[inline]
pub fn enable_interrupts_and_halt() {
    x86_64::instructions::interrupts::enable_and_hlt();
}

/// Stops this CPU for good: interrupts off, halt forever.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Runs `f` with interrupts masked, restoring the previous state afterwards.
#[inline]
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(f)
}

/// Enables interrupts.
pub fn enable_interrupts() {
    x86_64::instructions::interrupts::enable();
}

/// The current frame pointer (RBP). Meaningful because the kernel is built with
/// `-C force-frame-pointers=yes`.
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let rbp: u64;
    // SAFETY: reading RBP into a register has no side effects.
    unsafe { asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags)) };
    rbp
}

/// Writes to a lower-half address, which the kernel's own page tables never map, so the
/// write raises a page fault before touching memory. Exists for the fault-report test and
/// the shell's `crash pagefault`.
pub fn fault_on_write(addr: u64) {
    assert!(
        addr < 0x0000_8000_0000_0000,
        "only lower-half addresses are guaranteed unmapped"
    );
    // SAFETY: kernel tasks run on the kernel's page tables, whose lower half is empty, so
    // this write faults instead of modifying memory; the fault handler does not return.
    unsafe { core::ptr::write_volatile(addr as *mut u8, 1) };
}
