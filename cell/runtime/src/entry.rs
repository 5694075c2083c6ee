//! Process entry and exit: `_start`, argument access, and the panic handler.
//!
//! The kernel enters a cell at the ELF entry point with `rsp = abi::USER_STACK_TOP` and all
//! other registers unspecified. `_start` clears the frame pointer (ends backtraces), aligns the
//! stack as the System V ABI requires before a `call`, and calls [`start_rust`], which reads
//! the arguments with the `args` syscall, runs the payload's `main` and exits with its code.

#[cfg(target_os = "none")]
use core::panic::PanicInfo;

use crate::abi::{self, ArgsIter};
#[cfg(target_os = "none")]
use crate::{sys, PANIC_EXIT_CODE};

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym start_rust,
);

#[cfg(target_os = "none")]
extern "Rust" {
    /// Defined by the payload with `xylem_rt::entry!(main)`.
    fn __xylem_main(args: &Args) -> i32;
}

/// The payload's arguments (the strings of its spec, without the payload name).
pub struct Args {
    blob: [u8; abi::MAX_ARGS_BYTES],
    len: usize,
}

impl Args {
    /// Arguments decoded from a blob (`abi::encode_args` format); a blob that is too long is
    /// cut at `abi::MAX_ARGS_BYTES`.
    pub fn from_blob(blob: &[u8]) -> Self {
        let len = blob.len().min(abi::MAX_ARGS_BYTES);
        let mut args = Args {
            blob: [0; abi::MAX_ARGS_BYTES],
            len,
        };
        args.blob[..len].copy_from_slice(&blob[..len]);
        args
    }

    /// Iterates over the arguments in order.
    pub fn iter(&self) -> ArgsIter<'_> {
        ArgsIter::new(&self.blob[..self.len])
    }

    /// Argument `index`, if present.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.iter().nth(index)
    }

    /// Argument `index` parsed as an unsigned number.
    pub fn get_u64(&self, index: usize) -> Option<u64> {
        self.get(index).and_then(|text| text.parse().ok())
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(target_os = "none")]
extern "C" fn start_rust() -> ! {
    let mut args = Args {
        blob: [0; abi::MAX_ARGS_BYTES],
        len: 0,
    };
    // A kernel without arguments for us (or an error) means "no arguments", not a crash.
    args.len = sys::args(&mut args.blob).unwrap_or(0);
    // SAFETY: `__xylem_main` is defined by the `entry!` macro in the payload with exactly this
    // signature (a safe Rust fn); the link fails if it is missing.
    let code = unsafe { __xylem_main(&args) };
    sys::exit(code)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    match info.location() {
        Some(location) => crate::eprintln!(
            "panic at {}:{}: {}",
            location.file(),
            location.line(),
            info.message()
        ),
        None => crate::eprintln!("panic: {}", info.message()),
    }
    sys::exit(PANIC_EXIT_CODE)
}
