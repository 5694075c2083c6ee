//! `cell run|ls|stop|logs`: cells on this node. A cell is named by its node-local id, or, when
//! it serves a slot, by its cluster-wide name `service/slot@epoch` (`xylem::name::CellName`).

use ::cell::spec::{PayloadSpec, RestartPolicy};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{Command, CommandError};
use crate::cells;
use crate::cluster::control;
use xylem::name::CellName;

pub const COMMANDS: &[Command] = &[Command {
    name: "cell",
    usage: "cell run <payload> [args...] [--restart always|on-failure|never] [--memory-mib N] | cell ls | cell stop <id|svc/slot@epoch> | cell logs <id|svc/slot@epoch> [N]",
    help: "run, list, stop cells and read their logs",
    run: cell,
}];

fn cell(args: &[&str]) -> Result<(), CommandError> {
    match args.split_first() {
        Some((&"run", rest)) => run(rest),
        Some((&"ls", [])) => {
            ls();
            Ok(())
        }
        Some((&"stop", [id])) => stop(id),
        Some((&"logs", [id])) => logs(id, "20"),
        Some((&"logs", [id, n])) => logs(id, n),
        _ => Err(CommandError::Usage),
    }
}

fn run(args: &[&str]) -> Result<(), CommandError> {
    let mut policy = RestartPolicy::Never;
    let mut limits = cells::Limits::default();
    let mut words: Vec<&str> = Vec::new();
    let mut iter = args.iter();
    while let Some(&word) = iter.next() {
        if word == "--restart" {
            let value = iter.next().ok_or(CommandError::Usage)?;
            policy = RestartPolicy::parse(value).ok_or_else(|| {
                CommandError::Failed(format!(
                    "restart policy '{value}' is not always, on-failure or never"
                ))
            })?;
        } else if word == "--memory-mib" {
            let value = iter.next().ok_or(CommandError::Usage)?;
            let mib: u32 = value.parse().map_err(|_| {
                CommandError::Failed(format!("memory limit '{value}' is not a number of MiB"))
            })?;
            limits = cells::Limits::with_memory_mib(mib)
                .map_err(|e| CommandError::Failed(e.to_string()))?;
        } else {
            words.push(word);
        }
    }
    if words.is_empty() {
        return Err(CommandError::Usage);
    }
    let spec = PayloadSpec::parse(&words.join(" "))
        .map_err(|e| CommandError::Failed(format!("bad payload spec: {e:?}")))?;
    let payload = spec.payload.clone();
    let id =
        cells::run(spec, policy, limits, None).map_err(|e| CommandError::Failed(e.to_string()))?;
    crate::println!("cell {id} started: {payload} (restart {})", policy.as_str());
    Ok(())
}

fn ls() {
    crate::println!(
        "{:>4}  {:<16} {:<10} {:<11} {:>5} {:>8} {:>6} {:>9} {:>9}  LAST EXIT",
        "ID",
        "NAME",
        "PAYLOAD",
        "STATE",
        "TASK",
        "RESTARTS",
        "FRAMES",
        "CPU_TICKS",
        "UPTIME_S"
    );
    let rows = cells::list();
    let finished = rows
        .iter()
        .filter(|c| {
            c.task.is_none()
                && matches!(
                    c.state,
                    ::cell::lifecycle::CellStatus::Dead | ::cell::lifecycle::CellStatus::CrashLoop
                )
        })
        .count();
    for c in rows {
        let task = c.task.map_or(String::from("-"), |t| t.to_string());
        let last = c.last_exit.map_or(String::from("-"), |e| e.to_string());
        let name = control::name_of(c.id).map_or(String::from("-"), |n| n.to_string());
        crate::println!(
            "{:>4}  {:<16} {:<10} {:<11} {:>5} {:>8} {:>6} {:>9} {:>5}.{:03}  {last}",
            c.id,
            name,
            c.payload,
            c.state.as_str(),
            task,
            c.restarts,
            c.frames,
            c.cpu_ticks,
            c.uptime_ms / 1000,
            c.uptime_ms % 1000
        );
    }
    crate::println!(
        "({finished} finished cells listed; at most {} are kept, holding at most {} KiB of heap)",
        cells::table::FINISHED_KEPT,
        cells::table::FINISHED_HEAP_BOUND_BYTES / 1024
    );
}

/// A local id (`3`) or a cluster-wide name (`web/1@7`) of a cell on this node.
fn parse_id(text: &str) -> Result<u64, CommandError> {
    if let Ok(id) = text.parse() {
        return Ok(id);
    }
    let name = CellName::parse(text).map_err(|_| {
        CommandError::Failed(format!(
            "'{text}' is neither a cell id nor a name like web/1@7 (see 'cell ls')"
        ))
    })?;
    control::cell_named(&name).ok_or_else(|| {
        CommandError::Failed(format!(
            "no cell {name} on this node (see 'xylem status' for where it runs)"
        ))
    })
}

fn stop(text: &str) -> Result<(), CommandError> {
    let id = parse_id(text)?;
    cells::stop(id).map_err(|e| CommandError::Failed(e.to_string()))?;
    match control::name_of(id) {
        Some(name) => crate::println!("cell {id} ({name}) stopped"),
        None => crate::println!("cell {id} stopped"),
    }
    Ok(())
}

fn logs(id: &str, n: &str) -> Result<(), CommandError> {
    let id = parse_id(id)?;
    let n: usize = n
        .parse()
        .map_err(|_| CommandError::Failed(format!("'{n}' is not a line count")))?;
    for line in cells::logs(id, n).map_err(|e| CommandError::Failed(e.to_string()))? {
        crate::println!("{line}");
    }
    Ok(())
}
