//! Port I/O for devices whose port numbers are fixed by the PC platform.
//!
//! Callers are device modules that own their ports; these wrappers exist so each of them
//! does not need its own `unsafe` for plain `in`/`out` instructions.

use x86_64::instructions::port::Port;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device the caller owns and the write must be valid for it.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees the port and value are valid for its device.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// The port must belong to a device the caller owns; reading may have device side effects.
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller guarantees the port is valid to read.
    unsafe { Port::<u8>::new(port).read() }
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller guarantees the port and value are valid for its device.
    unsafe { Port::<u16>::new(port).write(value) }
}

/// Writes a 32-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller guarantees the port and value are valid for its device.
    unsafe { Port::<u32>::new(port).write(value) }
}

/// Reads a 32-bit word from an I/O port.
///
/// # Safety
/// As for [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    // SAFETY: the caller guarantees the port is valid to read.
    unsafe { Port::<u32>::new(port).read() }
}
