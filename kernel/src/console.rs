//! The interactive console on COM1: `print!`/`println!` and the interrupt-fed input queue.

use kcore::byte_ring::ByteRing;
use spin::Mutex;

use crate::arch::{cpu, serial};
use crate::sched::wait::WaitQueue;

const INPUT_BYTES: usize = 1024;

static INPUT: Mutex<ByteRing<INPUT_BYTES>> = Mutex::new(ByteRing::new());
static READERS: WaitQueue = WaitQueue::new();

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

/// COM1 receive interrupt: move every buffered byte into the input queue and wake the
/// reader.
pub fn on_receive_interrupt() {
    cpu::without_interrupts(|| {
        let mut input = INPUT.lock();
        serial::drain_console_input(|byte| {
            input.push(byte);
        });
    });
    READERS.wake_one();
}

/// Takes the next input byte, blocking the calling task until one arrives.
pub fn read_byte_blocking() -> u8 {
    let mut byte = None;
    READERS.wait_until(|| {
        byte = INPUT.lock().pop();
        byte.is_some()
    });
    byte.expect("wait_until returned without input")
}

/// Writes raw bytes to the console (echo, erase sequences).
pub fn write_raw(bytes: &[u8]) {
    serial::write_bytes(serial::Line::Console, bytes);
}
