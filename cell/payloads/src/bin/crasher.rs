//! `crasher <mode> [after_ms]` and `crasher exit <code> [after_ms]`: waits `after_ms`
//! (default 0), then misbehaves in one chosen way, to test that a cell's failure stays the
//! cell's failure. Modes and the expected kernel verdict:
//!
//! | mode             | what happens                                  | expected exit               |
//! |------------------|-----------------------------------------------|-----------------------------|
//! | `pagefault`      | reads unmapped 0x1000                         | Faulted { vector: 14, .. }  |
//! | `gpfault`        | reads non-canonical 0x8000_0000_0000_0000     | Faulted { vector: 13, .. }  |
//! | `invalid-opcode` | executes `ud2`                                | Faulted { vector: 6, .. }   |
//! | `divide-by-zero` | `div` by zero                                 | Faulted { vector: 0, .. }   |
//! | `wild-pointer`   | `write(1, 0xffff_8000_0000_0000, 16)`         | Exited(14) if EFAULT, else Exited(1) |
//! | `spin-forever`   | infinite loop, no syscalls                    | only a kill ends it         |
//! | `panic`          | Rust panic                                    | Exited(101)                 |
//! | `exit <code>`    | exits with `code`                             | Exited(code)                |
//!
//! A missing or unknown mode prints the usage and exits 2.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use xylem_rt::{abi, fault, println, sys, Args, Errno};

xylem_rt::entry!(main);

/// The kernel-half address passed to `write` by `wild-pointer`.
const KERNEL_ADDR: u64 = abi::KERNEL_HALF_START;
/// Exit code of `wild-pointer` when the kernel correctly answered EFAULT.
const WILD_POINTER_OK_EXIT: i32 = Errno::EFAULT as i32;
/// Exit code for usage errors.
const USAGE_EXIT: i32 = 2;

const USAGE: &str = "usage: crasher <pagefault|gpfault|invalid-opcode|divide-by-zero|wild-pointer|spin-forever|panic> [after_ms]\n       crasher exit <code> [after_ms]";

fn main(args: &Args) -> i32 {
    let Some(mode) = args.get(0) else {
        println!("{USAGE}");
        return USAGE_EXIT;
    };
    let exit_code = if mode == "exit" {
        match args.get(1).map(str::parse::<i32>) {
            Some(Ok(code)) => Some(code),
            _ => {
                println!("{USAGE}");
                return USAGE_EXIT;
            }
        }
    } else {
        None
    };
    let after_ms = payloads::arg_u64(args, if exit_code.is_some() { 2 } else { 1 }, 0);
    println!(
        "crasher cell={} mode={mode} after_ms={after_ms}",
        sys::cell_id()
    );
    payloads::sleep_ms(after_ms);
    if let Some(code) = exit_code {
        println!("crasher: exiting with code {code}");
        return code;
    }
    misbehave(mode)
}

fn misbehave(mode: &str) -> i32 {
    match mode {
        "pagefault" => fault::page_fault(),
        "gpfault" => fault::general_protection_fault(),
        "invalid-opcode" => fault::invalid_opcode(),
        "divide-by-zero" => fault::divide_by_zero(),
        "wild-pointer" => wild_pointer(),
        "spin-forever" => spin_forever(),
        "panic" => panic!("crasher asked to panic"),
        _ => {
            println!("unknown mode {mode:?}\n{USAGE}");
            USAGE_EXIT
        }
    }
}

fn wild_pointer() -> i32 {
    match sys::write_raw(abi::FD_STDOUT, KERNEL_ADDR, 16) {
        Err(errno) => {
            println!(
                "crasher: write(kernel address) -> {} ({})",
                errno.name(),
                errno.value()
            );
            if errno == Errno::EFAULT {
                WILD_POINTER_OK_EXIT
            } else {
                1
            }
        }
        Ok(written) => {
            println!("crasher: write(kernel address) succeeded with {written}: kernel bug");
            1
        }
    }
}

fn spin_forever() -> ! {
    println!("crasher: spinning forever without syscalls");
    loop {
        core::hint::spin_loop();
    }
}
