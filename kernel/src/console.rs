//! The interactive console on COM1: `print!`/`println!` and the interrupt-fed input queue.

use kcore::byte_ring::ByteRing;
use spin::Mutex;

use crate::arch::{cpu, serial};

const INPUT_BYTES: usize = 1024;

static INPUT: Mutex<ByteRing<INPUT_BYTES>> = Mutex::new(ByteRing::new());

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::arch::serial::write_fmt($crate::arch::serial::Line::Console, format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::print!("{}\n", format_args!($($arg)*)) };
}

/// COM1 receive interrupt: move every buffered byte into the input queue.
pub fn on_receive_interrupt() {
    let mut input = INPUT.lock();
    serial::drain_console_input(|byte| {
        input.push(byte);
    });
}

/// Takes the next input byte, halting until one arrives.
pub fn read_byte_blocking() -> u8 {
    loop {
        x86_64::instructions::interrupts::disable();
        let next = INPUT.lock().pop();
        match next {
            Some(byte) => {
                cpu::enable_interrupts();
                return byte;
            }
            // `sti; hlt` is atomic: an interrupt that lands between the check and the
            // halt still wakes us.
            None => cpu::enable_interrupts_and_halt(),
        }
    }
}

/// Input bytes dropped because the queue was full.
pub fn input_dropped() -> u64 {
    cpu::without_interrupts(|| INPUT.lock().dropped())
}

/// Writes raw bytes to the console (echo, erase sequences).
pub fn write_raw(bytes: &[u8]) {
    serial::write_bytes(serial::Line::Console, bytes);
}
