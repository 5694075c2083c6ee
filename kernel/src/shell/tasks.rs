//! Task commands: ps, load, events, kill, spawn.
//!
//! The kernel protects itself from its own shell: `kill` ends only tasks the shell started
//! (`spawn`), never the kernel's (reactor, net, shell, idle…) nor a cell's (`cell stop`
//! ends a cell with its table entry and memory); `spawn` runs test tasks only below the
//! kernel's services, so a spinner can slow cells but never starve the reactor.

use alloc::format;
use kcore::run_queue::Priority;

use super::{Command, CommandError};
use crate::events::{self, ExitReason};
use crate::sched::{self, TaskId};
use crate::time;

pub const COMMANDS: &[Command] = &[
    Command {
        name: "ps",
        usage: "ps",
        help: "list tasks (id, name, state, priority, CPU ticks)",
        run: ps,
    },
    Command {
        name: "load",
        usage: "load",
        help: "run-queue length and load averages",
        run: load,
    },
    Command {
        name: "events",
        usage: "events [N]",
        help: "the last N kernel events (default 20)",
        run: recent_events,
    },
    Command {
        name: "kill",
        usage: "kill <task-id>",
        help: "end a task started with spawn (kernel and cell tasks are refused)",
        run: kill,
    },
    Command {
        name: "spawn",
        usage: "spawn spin|sleeper|exit [priority 2-3]",
        help: "start a test task (priority 2 = cells, the default; 3 = background)",
        run: spawn,
    },
];

fn ps(args: &[&str]) -> Result<(), CommandError> {
    super::basic::no_args(args)?;
    crate::println!(
        "{:>5}  {:<24} {:<9} {:>4} {:>10}  CLASS",
        "ID",
        "NAME",
        "STATE",
        "PRIO",
        "CPU_TICKS"
    );
    for t in sched::tasks() {
        crate::println!(
            "{:>5}  {:<24} {:<9} {:>4} {:>10}  {}",
            t.id,
            t.name,
            t.state.as_str(),
            t.priority,
            t.cpu_ticks,
            t.class.as_str()
        );
    }
    Ok(())
}

fn load(args: &[&str]) -> Result<(), CommandError> {
    super::basic::no_args(args)?;
    let l = sched::load();
    crate::println!(
        "runnable {}  load_1s {}.{:03}  load_10s {}.{:03}  context_switches {}",
        l.runnable,
        l.load_1s_milli / 1000,
        l.load_1s_milli % 1000,
        l.load_10s_milli / 1000,
        l.load_10s_milli % 1000,
        l.context_switches
    );
    Ok(())
}

fn recent_events(args: &[&str]) -> Result<(), CommandError> {
    let n = match args {
        [] => 20,
        [n] => n
            .parse::<usize>()
            .map_err(|_| CommandError::Failed(format!("'{n}' is not a count")))?,
        _ => return Err(CommandError::Usage),
    };
    for e in events::recent(n) {
        let t = e.event.t_us;
        crate::println!(
            "#{:<5} {:>6}.{:06}  {} {}",
            e.seq,
            t / 1_000_000,
            t % 1_000_000,
            e.event.kind.name(),
            e.event.kind
        );
    }
    let (offered, pending, overflowed) = events::counters();
    let (consumed, missed) = crate::reactor::counters();
    crate::println!("events: {offered} offered, {consumed} consumed, {pending} pending, {overflowed} overflowed, {missed} missed by the reactor");
    crate::println!(
        "cell exits finished from the cell table after their event was lost: {}",
        crate::cells::swept_exits()
    );
    Ok(())
}

fn kill(args: &[&str]) -> Result<(), CommandError> {
    let [id] = args else {
        return Err(CommandError::Usage);
    };
    let id: TaskId = id
        .parse()
        .map_err(|_| CommandError::Failed(format!("'{id}' is not a task id (see 'ps')")))?;
    match sched::kill_shell_task(id) {
        Ok(_) => {
            crate::println!("killed task {id}");
            Ok(())
        }
        Err(sched::KillError::NoSuchTask) => {
            Err(CommandError::Failed(format!("no task {id} (see 'ps')")))
        }
        Err(sched::KillError::Protected(why)) => Err(CommandError::Failed(format!(
            "task {id} cannot be killed: {why}"
        ))),
        Err(sched::KillError::KernelTask { name }) => Err(CommandError::Failed(format!(
            "task {id} ({name}) cannot be killed: it is one of the kernel's own tasks"
        ))),
        Err(sched::KillError::CellTask) => {
            let cell = crate::cells::list()
                .into_iter()
                .find(|c| c.task == Some(id))
                .map(|c| c.id);
            Err(CommandError::Failed(match cell {
                Some(cell) => format!(
                    "task {id} runs cell {cell}: stop the cell instead ('cell stop {cell}')"
                ),
                None => format!("task {id} runs a cell: stop the cell instead ('cell stop')"),
            }))
        }
    }
}

/// The lowest priority number (the most urgent level) a shell task may have: the cells'
/// level, below the reactor and every other kernel service.
const SHELL_PRIORITY_MIN: u8 = 2;

fn spawn(args: &[&str]) -> Result<(), CommandError> {
    let (kind, priority) = match args {
        [kind] => (*kind, Priority::CELL),
        [kind, p] => (*kind, shell_priority(p)?),
        _ => return Err(CommandError::Usage),
    };
    let body: fn(u64) = match kind {
        "spin" => |_| loop {
            core::hint::spin_loop();
        },
        "sleeper" => |_| loop {
            sched::sleep_ms(1000);
        },
        "exit" => |_| {
            sched::sleep_ms(10);
            sched::exit(ExitReason::Exited(7));
        },
        other => {
            return Err(CommandError::Failed(format!(
                "unknown test task '{other}' (spin, sleeper, exit)"
            )))
        }
    };
    let name = format!("test-{kind}");
    // A plain function: nothing on the heap for a killed task to strand.
    let id = sched::spawn_class_fn(&name, priority, sched::TaskClass::Shell, body, 0)
        .map_err(|e| CommandError::Failed(format!("cannot start a task: {e:?}")))?;
    crate::println!(
        "spawned task {id} ({name}) at priority {} (t_us={})",
        priority.level(),
        time::now_us()
    );
    Ok(())
}

/// Parses a shell task's priority: 2 or 3 only, never above the kernel's services.
fn shell_priority(text: &str) -> Result<Priority, CommandError> {
    let level = text
        .parse::<u8>()
        .ok()
        .and_then(Priority::new)
        .ok_or_else(|| {
            CommandError::Failed(format!("priority '{text}' is not {SHELL_PRIORITY_MIN}-3"))
        })?;
    if level.level() < SHELL_PRIORITY_MIN {
        return Err(CommandError::Failed(format!(
            "priority {} would run above the kernel's services (the reactor runs at 1): shell tasks run at 2 (like cells) or 3 (background)",
            level.level()
        )));
    }
    Ok(level)
}
