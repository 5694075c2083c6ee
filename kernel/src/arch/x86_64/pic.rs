//! The legacy 8259 PICs, which Xylem does not use: remapped away from the exception
//! vectors (so a stray interrupt cannot masquerade as a fault) and fully masked.

use super::port::outb;

const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xa0;
const PIC2_DATA: u16 = 0xa1;

/// Remaps both PICs to vectors 0xe0..0xef and masks every line.
pub fn disable() {
    // SAFETY: the standard ICW1-ICW4 initialisation sequence on the PIC's fixed ports;
    // nothing else in the kernel drives the PICs.
    unsafe {
        outb(PIC1_CMD, 0x11);
        outb(PIC2_CMD, 0x11);
        outb(PIC1_DATA, 0xe0);
        outb(PIC2_DATA, 0xe8);
        outb(PIC1_DATA, 0x04);
        outb(PIC2_DATA, 0x02);
        outb(PIC1_DATA, 0x01);
        outb(PIC2_DATA, 0x01);
        outb(PIC1_DATA, 0xff);
        outb(PIC2_DATA, 0xff);
    }
}
