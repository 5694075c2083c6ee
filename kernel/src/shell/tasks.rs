//! Task commands: ps, load, events, kill, spawn.

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
        help: "end a task",
        run: kill,
    },
    Command {
        name: "spawn",
        usage: "spawn spin|sleeper|exit [priority 0-3]",
        help: "start a test task",
        run: spawn,
    },
];

fn ps(args: &[&str]) -> Result<(), CommandError> {
    super::basic::no_args(args)?;
    crate::println!(
        "{:>5}  {:<24} {:<9} {:>4} {:>10}",
        "ID",
        "NAME",
        "STATE",
        "PRIO",
        "CPU_TICKS"
    );
    for t in sched::tasks() {
        crate::println!(
            "{:>5}  {:<24} {:<9} {:>4} {:>10}",
            t.id,
            t.name,
            t.state.as_str(),
            t.priority,
            t.cpu_ticks
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
    Ok(())
}

fn kill(args: &[&str]) -> Result<(), CommandError> {
    let [id] = args else {
        return Err(CommandError::Usage);
    };
    let id: TaskId = id
        .parse()
        .map_err(|_| CommandError::Failed(format!("'{id}' is not a task id (see 'ps')")))?;
    match sched::kill(id) {
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
    }
}

fn spawn(args: &[&str]) -> Result<(), CommandError> {
    let (kind, priority) = match args {
        [kind] => (*kind, Priority::CELL),
        [kind, p] => {
            let level = p.parse::<u8>().ok().and_then(Priority::new);
            (
                *kind,
                level.ok_or_else(|| CommandError::Failed(format!("priority '{p}' is not 0-3")))?,
            )
        }
        _ => return Err(CommandError::Usage),
    };
    let body: fn() = match kind {
        "spin" => || loop {
            core::hint::spin_loop();
        },
        "sleeper" => || loop {
            sched::sleep_ms(1000);
        },
        "exit" => || {
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
    let id =
        sched::spawn(&name, priority, body).map_err(|e| CommandError::Failed(format!("{e:?}")))?;
    crate::println!(
        "spawned task {id} ({name}) at priority {} (t_us={})",
        priority.level(),
        time::now_us()
    );
    Ok(())
}
