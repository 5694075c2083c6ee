//! `crash`: ending this kernel on purpose, to exercise the panic path and crash records
//! (as Linux's sysrq-c does). The node halts; its next boot reports the panic.

use alloc::string::String;

use super::{Command, CommandError};

pub const COMMANDS: &[Command] = &[Command {
    name: "crash",
    usage: "crash panic [message...] | crash pagefault",
    help: "crash this kernel on purpose (the next boot reports it as the last panic)",
    run: crash,
}];

/// An address no kernel mapping covers (the same one the fatal-pagefault ktest uses).
const UNMAPPED: u64 = 0xdead_beef;

fn crash(args: &[&str]) -> Result<(), CommandError> {
    match args {
        ["panic"] => panic!("crash requested from the shell"),
        ["panic", words @ ..] => {
            let message: String = words.join(" ");
            panic!("{message}")
        }
        ["pagefault"] => {
            crate::arch::cpu::fault_on_write(UNMAPPED);
            Err(CommandError::Failed(String::from(
                "the write to an unmapped address did not fault",
            )))
        }
        _ => Err(CommandError::Usage),
    }
}
