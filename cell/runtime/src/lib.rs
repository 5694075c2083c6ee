//! `xylem-rt`: the tiny ring-3 runtime every Xylem cell payload links against.
//!
//! It provides, and nothing more:
//! * the `_start` entry point ([`entry`]), which fetches the arguments and calls the payload's
//!   `main` declared with [`entry!`], then exits with its return value;
//! * a safe wrapper for every syscall of the ABI ([`sys`]);
//! * `print!`/`println!` (fd 1) and `eprint!`/`eprintln!` (fd 2) ([`io`]);
//! * a panic handler that prints the message and exits with code [`PANIC_EXIT_CODE`];
//! * a global allocator over the `mem_map` syscall ([`heap`]), so payloads use `alloc`;
//! * sockets: [`net::TcpListener`], [`net::TcpStream`], [`net::UdpSocket`], [`net::poll`];
//! * the cell's own identity ([`sys::cell_info`]: its cluster-wide name, node, memory);
//! * deliberate CPU faults for test payloads ([`fault`]).
//!
//! All `unsafe` of the payload side lives in this crate (`sys`, `fault`, `entry`), each block
//! with a `// SAFETY:` comment; payload binaries are `#![forbid(unsafe_code)]`. The syscall
//! numbers, errno values and layout come from `cell/src/abi.rs`, included verbatim as [`abi`],
//! so the kernel and the runtime share one definition. Arguments live in a fixed buffer of
//! `abi::MAX_ARGS_BYTES` on the initial stack; the heap is mapped on first use.
//!
//! Host tests (`cargo test` in this directory) cover the pure parts (the allocator's chunk
//! sizing and arena handling); the entry point, panic handler and global allocator are
//! compiled only for `x86_64-unknown-none`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

#[path = "../../src/abi.rs"]
pub mod abi;
pub mod entry;
pub mod fault;
pub mod heap;
pub mod io;
pub mod mem;
pub mod net;
pub mod sys;

pub use abi::Errno;
pub use entry::Args;

/// Exit code of a cell whose payload panicked (as Rust's test harness uses).
pub const PANIC_EXIT_CODE: i32 = 101;

/// Declares the payload's main function: `xylem_rt::entry!(main);` where
/// `fn main(args: &xylem_rt::Args) -> i32`. The return value becomes the exit code.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// Called by the runtime's `_start`; the name is the contract between the two.
        #[no_mangle]
        pub fn __xylem_main(args: &$crate::Args) -> i32 {
            let main: fn(&$crate::Args) -> i32 = $main;
            main(args)
        }
    };
}
