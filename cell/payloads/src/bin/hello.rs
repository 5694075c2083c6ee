//! `hello [times]`: prints `hello from cell <id>` once a second, forever (or `times` times,
//! then exits 0). The smallest end-to-end check of write, cell_id and sleep_ms.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use xylem_rt::{println, sys, Args};

xylem_rt::entry!(main);

/// Pause between greetings.
const INTERVAL_MS: u64 = 1000;

fn main(args: &Args) -> i32 {
    let times = payloads::arg_u64(args, 0, 0);
    let id = sys::cell_id();
    let mut round = 0u64;
    loop {
        println!("hello from cell {id}");
        round += 1;
        if times != 0 && round >= times {
            return 0;
        }
        payloads::sleep_ms(INTERVAL_MS);
    }
}
