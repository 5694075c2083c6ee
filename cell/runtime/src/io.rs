//! Formatted output to the cell log: `print!`, `println!` (fd 1), `eprint!`, `eprintln!` (fd 2).
//!
//! Output is formatted into a fixed stack buffer and sent in as few `write` calls as possible,
//! so a line shorter than the buffer reaches the kernel's log capture in one piece.

use core::fmt;

use crate::sys;

/// Bytes formatted before a `write` syscall is forced.
const BUFFER_BYTES: usize = 512;

/// A buffered writer to one file descriptor; flushes when full and on [`Writer::flush`].
pub struct Writer {
    fd: u64,
    buf: [u8; BUFFER_BYTES],
    len: usize,
}

impl Writer {
    /// A writer to `fd` with an empty buffer.
    pub const fn new(fd: u64) -> Self {
        Writer {
            fd,
            buf: [0; BUFFER_BYTES],
            len: 0,
        }
    }

    /// Sends the buffered bytes. Errors are dropped: a cell has nowhere else to report them.
    pub fn flush(&mut self) {
        let _ = sys::write_all(self.fd, &self.buf[..self.len]);
        self.len = 0;
    }
}

impl fmt::Write for Writer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            if self.len == BUFFER_BYTES {
                self.flush();
            }
            self.buf[self.len] = byte;
            self.len += 1;
        }
        Ok(())
    }
}

/// Implementation of the print macros; `newline` appends `\n` before the single flush.
#[doc(hidden)]
pub fn _print(fd: u64, args: fmt::Arguments, newline: bool) {
    use fmt::Write;
    let mut writer = Writer::new(fd);
    let _ = writer.write_fmt(args);
    if newline {
        let _ = writer.write_str("\n");
    }
    writer.flush();
}

/// Prints to the cell's standard output (fd 1).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::io::_print($crate::abi::FD_STDOUT, format_args!($($arg)*), false) };
}

/// Prints a line to the cell's standard output (fd 1).
#[macro_export]
macro_rules! println {
    () => { $crate::io::_print($crate::abi::FD_STDOUT, format_args!(""), true) };
    ($($arg:tt)*) => { $crate::io::_print($crate::abi::FD_STDOUT, format_args!($($arg)*), true) };
}

/// Prints to the cell's standard error (fd 2).
#[macro_export]
macro_rules! eprint {
    ($($arg:tt)*) => { $crate::io::_print($crate::abi::FD_STDERR, format_args!($($arg)*), false) };
}

/// Prints a line to the cell's standard error (fd 2).
#[macro_export]
macro_rules! eprintln {
    () => { $crate::io::_print($crate::abi::FD_STDERR, format_args!(""), true) };
    ($($arg:tt)*) => { $crate::io::_print($crate::abi::FD_STDERR, format_args!($($arg)*), true) };
}
