//! Helpers shared by the payload binaries (argument parsing, delays) and the `http`
//! payload's protocol logic ([`http`], host-tested). The binaries themselves are in
//! `src/bin/`; each is `#![no_std]`, `#![no_main]`, `#![forbid(unsafe_code)]` and declares
//! its `main` with `xylem_rt::entry!`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod http;

use xylem_rt::{println, sys, Args};

/// Sleeps `ms`, splitting waits longer than the ABI maximum; errors are reported once.
pub fn sleep_ms(ms: u64) {
    let mut remaining_ms = ms;
    while remaining_ms > 0 {
        let step_ms = remaining_ms.min(xylem_rt::abi::MAX_SLEEP_MS);
        if let Err(errno) = sys::sleep_ms(step_ms) {
            println!("sleep_ms({step_ms}) failed: {}", errno.name());
            return;
        }
        remaining_ms -= step_ms;
    }
}

/// Argument `index` as a number, `default` when absent; a malformed number is an error the
/// payload reports by exiting with code 2 (as command-line tools do for usage errors).
pub fn arg_u64(args: &Args, index: usize, default: u64) -> u64 {
    match args.get(index) {
        None => default,
        Some(text) => match text.parse() {
            Ok(value) => value,
            Err(_) => {
                println!("bad number in argument {index}: {text:?}");
                sys::exit(2)
            }
        },
    }
}
