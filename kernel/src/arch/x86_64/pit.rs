//! The 8254 PIT, used once at boot as a known-frequency reference to calibrate the TSC and
//! the local APIC timer (channel 2, gated through port 0x61, so no interrupt is involved).

use super::port::{inb, outb};

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

const CHANNEL2_DATA: u16 = 0x42;
const MODE_CMD: u16 = 0x43;
const GATE_PORT: u16 = 0x61;

/// Busy-waits `count` PIT ticks (at most 65535, ~54.9 ms) and calls `start` right after the
/// countdown begins and returns what `stop` reports at its end.
pub fn measure<T, U>(count: u16, start: impl FnOnce() -> T, stop: impl FnOnce(T) -> U) -> U {
    assert!(count > 0, "a zero PIT count would never expire");
    // SAFETY: ports 0x42/0x43/0x61 are the PIT channel 2 and its gate; the kernel uses them
    // nowhere else, and the speaker output bit is kept off.
    unsafe {
        let gate = inb(GATE_PORT);
        outb(GATE_PORT, (gate & !0x02) & !0x01);
        // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
        outb(MODE_CMD, 0b1011_0000);
        outb(CHANNEL2_DATA, (count & 0xff) as u8);
        outb(CHANNEL2_DATA, (count >> 8) as u8);
        let gate = inb(GATE_PORT) & !0x02;
        outb(GATE_PORT, gate | 0x01);
        let token = start();
        // Bit 5 is channel 2's output, which goes high at terminal count.
        while inb(GATE_PORT) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        let result = stop(token);
        outb(GATE_PORT, gate & !0x01);
        result
    }
}
