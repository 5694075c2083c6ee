//! The serial shell on COM1: prompt, line editing, and dispatch to commands.
//!
//! Each command is a table row (name, usage, one-line help, handler). Handlers return
//! `Result<(), CommandError>`; the shell prints errors as one `error: …` line and the prompt
//! always comes back. Subsystems add their commands in their own file under `shell/`.

mod basic;
mod cell;
mod cluster;
mod control;
mod crash;
mod net;
mod tasks;
mod trust;

use alloc::string::String;
use kcore::line_editor::{Action, LineEditor};

use crate::console;
use crate::node;

/// Why a command did not run.
#[derive(Debug)]
pub enum CommandError {
    /// Wrong number or shape of arguments; the usage line is printed.
    Usage,
    /// A specific problem with an argument or the system state.
    Failed(String),
}

/// A shell command.
pub struct Command {
    pub name: &'static str,
    pub usage: &'static str,
    pub help: &'static str,
    pub run: fn(&[&str]) -> Result<(), CommandError>,
}

/// Every command, in the order `help` lists them.
fn commands() -> impl Iterator<Item = &'static Command> {
    basic::COMMANDS
        .iter()
        .chain(tasks::COMMANDS)
        .chain(cell::COMMANDS)
        .chain(cluster::COMMANDS)
        .chain(control::COMMANDS)
        .chain(net::COMMANDS)
        .chain(crash::COMMANDS)
        .chain(trust::COMMANDS)
}

/// Runs the shell forever.
pub fn run() -> ! {
    let mut editor = LineEditor::new();
    prompt();
    loop {
        let byte = console::read_byte_blocking();
        match editor.feed(byte) {
            Action::None => {}
            Action::Echo(b) => console::write_raw(&[b]),
            Action::Erase => console::write_raw(b"\x08 \x08"),
            Action::Bell => console::write_raw(b"\x07"),
            Action::Cancel => {
                console::write_raw(b"^C\r\n");
                prompt();
            }
            Action::Line(line) => {
                console::write_raw(b"\r\n");
                execute(&line);
                prompt();
            }
        }
    }
}

fn prompt() {
    crate::print!("xylem@{}> ", node::name());
}

/// Parses and runs one command line.
pub fn execute(line: &str) {
    let words: alloc::vec::Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else {
        return;
    };
    let Some(command) = commands().find(|c| c.name == name) else {
        crate::println!("error: unknown command '{name}' (type 'help' for the list)");
        return;
    };
    match (command.run)(args) {
        Ok(()) => {}
        Err(CommandError::Usage) => crate::println!("error: usage: {}", command.usage),
        Err(CommandError::Failed(why)) => crate::println!("error: {name}: {why}"),
    }
}

/// Prints the command table (the `help` command).
pub fn print_help() {
    for command in commands() {
        crate::println!("  {:<28} {}", command.usage, command.help);
    }
}
