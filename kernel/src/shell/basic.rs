//! The basic commands: help, echo, uptime, mem, poweroff.

use super::{Command, CommandError};
use crate::mm::{frames, heap, PAGE_BYTES};
use crate::{platform, time};

pub const COMMANDS: &[Command] = &[
    Command {
        name: "help",
        usage: "help",
        help: "list commands",
        run: help,
    },
    Command {
        name: "echo",
        usage: "echo [text...]",
        help: "print the arguments",
        run: echo,
    },
    Command {
        name: "uptime",
        usage: "uptime",
        help: "time since boot",
        run: uptime,
    },
    Command {
        name: "mem",
        usage: "mem",
        help: "physical frames and kernel heap use",
        run: mem,
    },
    Command {
        name: "poweroff",
        usage: "poweroff",
        help: "power the node off (ACPI S5)",
        run: poweroff,
    },
];

pub(super) fn no_args(args: &[&str]) -> Result<(), CommandError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(CommandError::Usage)
    }
}

fn help(args: &[&str]) -> Result<(), CommandError> {
    no_args(args)?;
    super::print_help();
    Ok(())
}

fn echo(args: &[&str]) -> Result<(), CommandError> {
    crate::println!("{}", args.join(" "));
    Ok(())
}

fn uptime(args: &[&str]) -> Result<(), CommandError> {
    no_args(args)?;
    let us = time::now_us();
    crate::println!(
        "up {}.{:06} s, {} ticks at {} Hz",
        us / 1_000_000,
        us % 1_000_000,
        time::ticks(),
        time::TICK_HZ
    );
    Ok(())
}

fn mem(args: &[&str]) -> Result<(), CommandError> {
    no_args(args)?;
    let (total, free) = (frames::total_frames(), frames::free_frames());
    let kib = |frames: u64| frames * PAGE_BYTES / 1024;
    crate::println!(
        "frames: total {total} ({} KiB), free {free} ({} KiB), used {} ({} KiB)",
        kib(total),
        kib(free),
        total - free,
        kib(total - free)
    );
    let (used, size) = heap::usage();
    crate::println!(
        "heap:   used {} KiB of {} KiB ({} bytes)",
        used / 1024,
        size / 1024,
        used
    );
    Ok(())
}

fn poweroff(args: &[&str]) -> Result<(), CommandError> {
    no_args(args)?;
    crate::println!("powering off");
    platform::poweroff()
}
