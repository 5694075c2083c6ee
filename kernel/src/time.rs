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

/// PIT ticks between the two calibration readings (30 ms).
const CALIBRATION_PIT_TICKS: u16 = 35_795;
/// Attempts at each reading; the one bracketed by the closest TSC pair is kept.
const READ_ATTEMPTS: usize = 24;

/// One reading of the PIT counter, bracketed by TSC reads.
#[derive(Clone, Copy)]
struct Reading {
    /// TSC halfway between the brackets.
    tsc_mid: u64,
    /// TSC cycles between the brackets: the reading's uncertainty.
    tsc_width: u64,
    pit: u16,
    apic: u32,
}

/// The tightest of [`READ_ATTEMPTS`] readings.
fn read_tight() -> Reading {
    (0..READ_ATTEMPTS)
        .map(|_| {
            let before = cpu::rdtsc();
            let apic = apic::timer_current();
            let pit = pit::read_count();
            let after = cpu::rdtsc();
            Reading {
                tsc_mid: before + (after - before) / 2,
                tsc_width: after - before,
                pit,
                apic,
            }
        })
        .min_by_key(|r| r.tsc_width)
        .expect("at least one attempt")
}

/// Measures the TSC and APIC timer against 30 ms of PIT and starts the periodic tick.
///
/// The PIT counter is read at the start and the end of the interval, each reading
/// bracketed by two TSC reads, and the TSC rate comes from the readings' midpoints. This
/// stays exact when the host deschedules the vCPU (TCG on a busy machine): a reading taken
/// across a descheduling has wide brackets and loses to a tight one. (Polling for the end of
/// a PIT countdown instead noticed it late under load and measured 2.6 GHz TSCs as up to
/// 5 GHz, which made every COM2 timestamp run at half speed.)
pub fn init() -> Calibration {
    pit::start_countdown();
    apic::timer_start_calibration();
    let start = read_tight();
    while start.pit.wrapping_sub(pit::read_count()) < CALIBRATION_PIT_TICKS {
        core::hint::spin_loop();
    }
    let end = read_tight();
    pit::stop();
    let pit_ticks = u64::from(start.pit.wrapping_sub(end.pit));
    assert!(pit_ticks > 0, "the PIT did not count during calibration");
    let tsc_delta = end.tsc_mid - start.tsc_mid;
    let tsc_hz = tsc_delta * pit::PIT_HZ / pit_ticks;
    assert!(tsc_hz > 0, "TSC did not advance during calibration");
    let window_us = pit_ticks * 1_000_000 / pit::PIT_HZ;
    let apic_delta = u64::from(start.apic.wrapping_sub(end.apic));
    let apic_counts_per_tick = (apic_delta * TICK_US / window_us).max(1) as u32;
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    TSC_AT_BOOT.store(cpu::rdtsc(), Ordering::Relaxed);
    CALIBRATION_ERROR_PPM.store(
        (start.tsc_width + end.tsc_width) / 2 * 1_000_000 / tsc_delta.max(1),
        Ordering::Relaxed,
    );
    apic::timer_start_periodic(idt::TIMER_VECTOR, apic_counts_per_tick);
    Calibration {
        tsc_hz,
        apic_counts_per_tick,
    }
}

/// Worst-case rate error of the calibration, in parts per million.
static CALIBRATION_ERROR_PPM: AtomicU64 = AtomicU64::new(0);

/// The calibration's worst-case rate error in ppm (shown in the boot event).
pub fn calibration_error_ppm() -> u64 {
    CALIBRATION_ERROR_PPM.load(Ordering::Relaxed)
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
