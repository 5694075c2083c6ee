//! `spinner [iterations_per_heartbeat] [heartbeats]`: burns CPU without sleeping and prints
//! `spinner heartbeat=<k> t_us=<clock>` every `iterations_per_heartbeat` loop iterations
//! (default 50,000,000); runs forever, or exits 0 after `heartbeats` heartbeats. Exercises
//! preemption: other cells must keep running while it spins.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::hint::black_box;

use xylem_rt::{println, sys, Args};

xylem_rt::entry!(main);

fn main(args: &Args) -> i32 {
    let per_heartbeat = payloads::arg_u64(args, 0, 50_000_000).max(1);
    let heartbeats = payloads::arg_u64(args, 1, 0);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut beat = 0u64;
    loop {
        for _ in 0..per_heartbeat {
            // xorshift step behind black_box: real work the optimiser cannot delete.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state = black_box(state);
        }
        beat += 1;
        println!(
            "spinner heartbeat={beat} t_us={} state={state:016x}",
            sys::clock_us()
        );
        if heartbeats != 0 && beat >= heartbeats {
            return 0;
        }
    }
}
