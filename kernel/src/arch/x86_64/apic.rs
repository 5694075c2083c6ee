//! Local APIC (timer, EOI) and I/O APIC (routing device interrupts), as memory-mapped
//! registers reached through the bootloader's physical-memory window.
//!
//! Register offsets follow the Intel SDM vol. 3A §11.4 (local APIC) and the 82093AA I/O
//! APIC datasheet. Xylem runs on one CPU, so every routed interrupt targets APIC id 0.

use core::sync::atomic::{AtomicU64, Ordering};

use super::idt::SPURIOUS_VECTOR;

const REG_ID: u64 = 0x20;
const REG_TPR: u64 = 0x80;
const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3e0;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
/// Divide configuration value for "divide by 16".
const DIVIDE_BY_16: u32 = 0b0011;

/// Virtual address of the local APIC's registers; 0 until [`init_local`].
static LAPIC: AtomicU64 = AtomicU64::new(0);

fn lapic_write(reg: u64, value: u32) {
    let base = LAPIC.load(Ordering::Relaxed);
    debug_assert!(base != 0, "local APIC used before init");
    // SAFETY: `base` maps the local APIC's 4 KiB register page (set by init_local) and
    // `reg` is one of the architectural register offsets above.
    unsafe { core::ptr::write_volatile((base + reg) as *mut u32, value) };
}

fn lapic_read(reg: u64) -> u32 {
    let base = LAPIC.load(Ordering::Relaxed);
    debug_assert!(base != 0, "local APIC used before init");
    // SAFETY: as in lapic_write.
    unsafe { core::ptr::read_volatile((base + reg) as *const u32) }
}

/// Enables the local APIC whose registers are mapped at `virt_base`.
pub fn init_local(virt_base: u64) {
    LAPIC.store(virt_base, Ordering::Relaxed);
    lapic_write(REG_TPR, 0);
    lapic_write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    lapic_write(REG_LVT_TIMER, LVT_MASKED);
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    lapic_read(REG_ID) >> 24
}

/// Acknowledges the interrupt being serviced. A no-op before the APIC is up.
pub fn end_of_interrupt() {
    if LAPIC.load(Ordering::Relaxed) != 0 {
        lapic_write(REG_EOI, 0);
    }
}

/// Starts the timer counting down from its maximum, masked, for calibration.
pub fn timer_start_calibration() -> u32 {
    lapic_write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    lapic_write(REG_LVT_TIMER, LVT_MASKED);
    lapic_write(REG_TIMER_INITIAL, u32::MAX);
    lapic_read(REG_TIMER_CURRENT)
}

/// The timer's current count.
pub fn timer_current() -> u32 {
    lapic_read(REG_TIMER_CURRENT)
}

/// Fires `vector` every `initial_count` timer ticks (divide-by-16 clock).
pub fn timer_start_periodic(vector: u8, initial_count: u32) {
    assert!(initial_count > 0, "a zero count stops the APIC timer");
    lapic_write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    lapic_write(REG_LVT_TIMER, u32::from(vector) | LVT_PERIODIC);
    lapic_write(REG_TIMER_INITIAL, initial_count);
}

/// Routes global system interrupt `gsi` of the I/O APIC at `virt_base` (whose first GSI is
/// `gsi_base`) to `vector` on APIC id `dest`.
pub fn ioapic_route(
    virt_base: u64,
    gsi_base: u32,
    gsi: u32,
    vector: u8,
    dest: u32,
    level_triggered: bool,
    active_low: bool,
) {
    assert!(
        gsi >= gsi_base,
        "GSI {gsi} is below this I/O APIC's base {gsi_base}"
    );
    let pin = gsi - gsi_base;
    let mut low = u32::from(vector);
    if active_low {
        low |= 1 << 13;
    }
    if level_triggered {
        low |= 1 << 15;
    }
    let high = dest << 24;
    // SAFETY: `virt_base` maps the I/O APIC's register window; IOREGSEL (offset 0) selects
    // a register and IOWIN (offset 0x10) accesses it; redirection entries start at 0x10.
    unsafe {
        let select = virt_base as *mut u32;
        let window = (virt_base + 0x10) as *mut u32;
        core::ptr::write_volatile(select, 0x10 + 2 * pin + 1);
        core::ptr::write_volatile(window, high);
        core::ptr::write_volatile(select, 0x10 + 2 * pin);
        core::ptr::write_volatile(window, low);
    }
}
