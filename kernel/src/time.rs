//! Time: a monotonic microsecond clock from the TSC (calibrated at boot against the PIT)
//! and the periodic tick from the local APIC timer.
//!
//! Under TCG the TSC follows the host's clock, so `now_us` tracks wall time closely enough
//! for timelines that xtask aligns with the host clock.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{apic, cpu, idt, pit};

/// Timer interrupts per second.
pub const TICK_HZ: u64 = 1000;
/// Length of one tick.
pub const TICK_US: u64 = 1_000_000 / TICK_HZ;

const CALIBRATION_PIT_COUNT: u16 = 11_932; // 10 ms

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);

/// What calibration measured.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    pub tsc_hz: u64,
    /// Local APIC timer counts (divide-by-16) per tick.
    pub apic_counts_per_tick: u32,
}

/// Calibration windows measured; the shortest wins.
const CALIBRATION_ROUNDS: usize = 5;

/// Measures the TSC and APIC timer against 10 ms of PIT and starts the periodic tick.
///
/// A window can only come out too long, never too short: when the host deschedules the
/// vCPU (TCG on a busy machine) the PIT's terminal count is noticed late, while both
/// clocks kept running. One window measured 2.6 GHz TSCs as up to 4 GHz under load, which
/// made every COM2 timestamp run 35 % slow. So several windows are measured and the
/// shortest one is used (with the APIC count from the same window).
pub fn init() -> Calibration {
    let (tsc_delta, apic_delta) = (0..CALIBRATION_ROUNDS)
        .map(|_| {
            pit::measure(
                CALIBRATION_PIT_COUNT,
                || (cpu::rdtsc(), apic::timer_start_calibration()),
                |(tsc0, apic0)| (cpu::rdtsc() - tsc0, apic0 - apic::timer_current()),
            )
        })
        .min_by_key(|&(tsc, _)| tsc)
        .expect("at least one calibration round");
    let window_us = u64::from(CALIBRATION_PIT_COUNT) * 1_000_000 / pit::PIT_HZ;
    let tsc_hz = tsc_delta * 1_000_000 / window_us;
    assert!(tsc_hz > 0, "TSC did not advance during calibration");
    let apic_counts_per_tick = (u64::from(apic_delta) * TICK_US / window_us).max(1) as u32;
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    TSC_AT_BOOT.store(cpu::rdtsc(), Ordering::Relaxed);
    apic::timer_start_periodic(idt::TIMER_VECTOR, apic_counts_per_tick);
    Calibration {
        tsc_hz,
        apic_counts_per_tick,
    }
}

/// Microseconds since calibration (0 before it).
pub fn now_us() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    let elapsed = cpu::rdtsc().saturating_sub(TSC_AT_BOOT.load(Ordering::Relaxed));
    (u128::from(elapsed) * 1_000_000 / u128::from(hz)) as u64
}

/// Converts a TSC difference to nanoseconds (for benchmarks).
#[cfg(feature = "ktest")]
pub fn tsc_to_ns(tsc_delta: u64) -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed).max(1);
    (u128::from(tsc_delta) * 1_000_000_000 / u128::from(hz)) as u64
}

/// Timer ticks since the tick started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Called from the timer interrupt.
pub fn on_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// Busy-waits (with halts) until `now_us() >= deadline_us`.
#[cfg(feature = "ktest")]
pub fn wait_until_us(deadline_us: u64) {
    while now_us() < deadline_us {
        cpu::enable_interrupts_and_halt();
    }
}
