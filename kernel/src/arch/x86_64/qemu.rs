//! Leaving QEMU: ACPI soft-off for a clean poweroff, `isa-debug-exit` for results.
//!
//! With `-device isa-debug-exit,iobase=0xf4,iosize=0x04`, writing `v` makes QEMU exit with
//! status `(v << 1) | 1`. The codes below are what harnesses match on.

use super::port::{outb, outw};

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Exit codes written to isa-debug-exit, and the host exit status each produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// In-kernel tests passed: host status 33.
    TestsPassed = 0x10,
    /// In-kernel tests failed: host status 35.
    #[cfg(feature = "ktest")]
    TestsFailed = 0x11,
    /// Kernel panic: host status 99.
    Panic = 0x31,
    /// The machine cannot run the kernel (e.g. too little RAM for the heap), said on the
    /// console before exiting: host status 67.
    BootFailed = 0x21,
}

/// Exits QEMU through isa-debug-exit. Without the device (real hardware, or QEMU started
/// without it), halts forever.
pub fn exit(code: ExitCode) -> ! {
    // Queued event lines are part of the result (the harness reads them).
    super::serial::flush_event_log();
    // SAFETY: port 0xf4 is isa-debug-exit when present and unused otherwise; writing to an
    // unclaimed port has no effect.
    unsafe { outb(DEBUG_EXIT_PORT, code as u8) };
    super::cpu::halt_forever()
}

/// ACPI soft-off (S5): writes SLP_TYP=0 (QEMU's \_S5 value on both i440fx and q35) with
/// SLP_EN to the PM1a control port. Returns only if the machine did not power off.
pub fn acpi_poweroff(pm1a_control_port: u16) {
    super::serial::flush_event_log();
    const SLP_EN: u16 = 1 << 13;
    // SAFETY: the port comes from the FADT's PM1a control block; writing SLP_EN there is
    // the ACPI-defined way to enter the sleep state, here S5.
    unsafe { outw(pm1a_control_port, SLP_EN) };
    for _ in 0..1_000_000 {
        core::hint::spin_loop();
    }
}
