//! Tasks from the shell: spawn, ps, kill with good and bad ids, and the `task_exit` events
//! those produce on COM2.

use std::time::Duration;

use crate::node::Node;
use crate::qemu::NodeSpec;
use crate::{ensure, Env, HarnessError};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Spawn a spinner, find it in `ps`, kill it, see `task_exit … reason=killed` on COM2;
/// a task that exits by itself logs its exit code; bad `kill` arguments are clear errors.
pub fn spawn_and_kill(env: &Env) -> Result<(), HarnessError> {
    let mut spec = NodeSpec::worker(3, &env.image);
    spec.name = "tasks".into();
    spec.kvm = env.kvm;
    let mut node = Node::start(spec, &env.run_dir)?;
    node.wait_for_prompt(BOOT_TIMEOUT)?;

    let out = node.command("spawn spin", COMMAND_TIMEOUT)?;
    let id = task_id(&out).ok_or_else(|| HarnessError::Check(format!("no task id in {out:?}")))?;
    let ps = node.command("ps", COMMAND_TIMEOUT)?;
    ensure!(
        ps.lines().any(
            |l| l.split_whitespace().next() == Some(&id.to_string()) && l.contains("test-spin")
        ),
        "ps does not list task {id}: {ps:?}"
    );
    for core in ["idle", "shell", "reactor"] {
        ensure!(ps.contains(core), "ps lacks the {core} task: {ps:?}");
    }
    let load = node.command("load", COMMAND_TIMEOUT)?;
    ensure!(
        load.starts_with("runnable ") && load.contains("load_1s"),
        "load output: {load:?}"
    );

    let killed = node.command(&format!("kill {id}"), COMMAND_TIMEOUT)?;
    ensure!(
        killed.trim_end() == format!("killed task {id}"),
        "kill output: {killed:?}"
    );
    let exit = node.wait_event("task_exit for the killed spinner", COMMAND_TIMEOUT, |e| {
        e.kind == "task_exit" && e.get("task") == Some(&id.to_string())
    })?;
    ensure!(
        exit.get("reason") == Some("killed") && exit.get("name") == Some("test-spin"),
        "task_exit event: {exit:?}"
    );
    let ps = node.command("ps", COMMAND_TIMEOUT)?;
    ensure!(!ps.contains("test-spin"), "killed task still in ps: {ps:?}");

    let out = node.command("spawn exit", COMMAND_TIMEOUT)?;
    let id = task_id(&out).ok_or_else(|| HarnessError::Check(format!("no task id in {out:?}")))?;
    let exit = node.wait_event("task_exit of the exit task", COMMAND_TIMEOUT, |e| {
        e.kind == "task_exit" && e.get("task") == Some(&id.to_string())
    })?;
    ensure!(
        exit.get("reason") == Some("exited") && exit.get("code") == Some("7"),
        "exit event: {exit:?}"
    );
    let recent = node.command("events 5", COMMAND_TIMEOUT)?;
    ensure!(
        recent.contains("task_exit") && recent.contains("overflowed"),
        "events output: {recent:?}"
    );

    for (line, want) in [
        ("kill", "error: usage: kill <task-id>"),
        ("kill abc", "error: kill: 'abc' is not a task id (see 'ps')"),
        ("kill 99999", "error: kill: no task 99999 (see 'ps')"),
        (
            "kill 0",
            "error: kill: task 0 cannot be killed: it is the idle task",
        ),
        (
            "spawn rocket",
            "error: spawn: unknown test task 'rocket' (spin, sleeper, exit)",
        ),
        ("spawn spin 9", "error: spawn: priority '9' is not 0-3"),
        ("events many", "error: events: 'many' is not a count"),
    ] {
        let out = node.command(line, COMMAND_TIMEOUT)?;
        ensure!(
            out.trim_end() == want,
            "{line:?} printed {out:?}, expected {want:?}"
        );
    }
    let up = node.command("uptime", COMMAND_TIMEOUT)?;
    ensure!(
        up.starts_with("up "),
        "node unresponsive after bad commands: {up:?}"
    );
    Ok(())
}

fn task_id(out: &str) -> Option<u64> {
    out.split_whitespace()
        .skip_while(|w| *w != "task")
        .nth(1)?
        .parse()
        .ok()
}
