//! `counter [interval_ms]`: prints `count=<n>` (n = 1, 2, ...) every `interval_ms`
//! (default 1000), forever. Lets a test see that a restarted cell starts again from 1.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use xylem_rt::{println, Args};

xylem_rt::entry!(main);

fn main(args: &Args) -> i32 {
    let interval_ms = payloads::arg_u64(args, 0, 1000);
    let mut count = 0u64;
    loop {
        count += 1;
        println!("count={count}");
        payloads::sleep_ms(interval_ms);
    }
}
