//! The 8254 PIT, used once at boot as a known-frequency reference to calibrate the TSC and
//! the local APIC timer (channel 2, gated through port 0x61, so no interrupt is involved).
//!
//! [`start_countdown`] and [`read_count`] let the caller read the counter itself at two
//! moments of its choosing (time.rs brackets each read between two TSC reads), which stays
//! exact when the vCPU is descheduled (polling for the end of a countdown is not: a late
//! poll lengthens the window).

use super::port::{inb, outb};

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

const CHANNEL2_DATA: u16 = 0x42;
const MODE_CMD: u16 = 0x43;
const GATE_PORT: u16 = 0x61;

/// Starts channel 2 counting down from 65535 (mode 0, gate on, speaker off). The count
/// wraps after ~54.9 ms; read it with [`read_count`], stop it with [`stop`].
pub fn start_countdown() {
    // SAFETY: as in `measure`: channel 2 and its gate are the kernel's alone.
    unsafe {
        let gate = inb(GATE_PORT);
        outb(GATE_PORT, (gate & !0x02) & !0x01);
        outb(MODE_CMD, 0b1011_0000);
        outb(CHANNEL2_DATA, 0xff);
        outb(CHANNEL2_DATA, 0xff);
        let gate = inb(GATE_PORT) & !0x02;
        outb(GATE_PORT, gate | 0x01);
    }
}

/// Channel 2's current count (latched, so both bytes belong to one moment).
pub fn read_count() -> u16 {
    // SAFETY: the counter-latch command for channel 2 and two reads of its data port.
    unsafe {
        outb(MODE_CMD, 0b1000_0000);
        let lo = inb(CHANNEL2_DATA);
        let hi = inb(CHANNEL2_DATA);
        u16::from_le_bytes([lo, hi])
    }
}

/// Gates channel 2 off.
pub fn stop() {
    // SAFETY: clears channel 2's gate bit (and keeps the speaker off).
    unsafe {
        let gate = inb(GATE_PORT);
        outb(GATE_PORT, gate & !0x03);
    }
}
