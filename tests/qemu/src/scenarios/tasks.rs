//! Tasks from the shell: spawn, ps, kill with good and bad ids, and the `task_exit` events
//! those produce on COM2. The kernel protects itself: `kill` refuses the reactor, the
//! network tasks and the shell itself, and a cell's task (`cell stop` ends cells); shell
//! tasks cannot run above the reactor, so a spinner never stops the control loop.

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
    protected_tasks(&mut node)?;
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
        ("spawn spin 9", "error: spawn: priority '9' is not 2-3"),
        (
            "spawn spin 0",
            "error: spawn: priority 0 would run above the kernel's services (the reactor runs at 1): shell tasks run at 2 (like cells) or 3 (background)",
        ),
        (
            "spawn spin 1",
            "error: spawn: priority 1 would run above the kernel's services (the reactor runs at 1): shell tasks run at 2 (like cells) or 3 (background)",
        ),
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

/// The id `ps` lists for the task named `name`.
fn ps_id(node: &mut Node, name: &str) -> Result<u64, HarnessError> {
    let ps = node.command("ps", COMMAND_TIMEOUT)?;
    ps.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| HarnessError::Check(format!("no task {name} in ps: {ps:?}")))
}

/// Events the reactor has consumed so far (from `events 1`).
fn consumed(node: &mut Node) -> Result<u64, HarnessError> {
    let out = node.command("events 1", COMMAND_TIMEOUT)?;
    out.split(" offered, ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| HarnessError::Check(format!("no consumed count in {out:?}")))
}

/// `kill` refuses every kernel task and a cell's task with a clear error, and they all keep
/// running; a spinner at the default priority does not stop the reactor.
fn protected_tasks(node: &mut Node) -> Result<(), HarnessError> {
    let ps = node.command("ps", COMMAND_TIMEOUT)?;
    // This node has no network card, so no `net` tasks; a cluster node's are refused alike.
    let kernel_tasks = ["reactor", "shell", "net", "net-timer"]
        .into_iter()
        .filter(|name| *name == "reactor" || *name == "shell" || ps.contains(name));
    for name in kernel_tasks {
        let id = ps_id(node, name)?;
        let out = node.command(&format!("kill {id}"), COMMAND_TIMEOUT)?;
        let want = format!(
            "error: kill: task {id} ({name}) cannot be killed: it is one of the kernel's own tasks"
        );
        ensure!(
            out.trim_end() == want,
            "kill {name} printed {out:?}, expected {want:?}"
        );
        ensure!(
            ps_id(node, name)? == id,
            "{name} is gone after a refused kill"
        );
    }
    let out = node.command("cell run counter 200", COMMAND_TIMEOUT)?;
    let cell: u64 = out
        .strip_prefix("cell ")
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| HarnessError::Check(format!("no cell id in {out:?}")))?;
    std::thread::sleep(Duration::from_millis(300));
    let task = ps_id(node, &format!("cell-{cell}"))?;
    let out = node.command(&format!("kill {task}"), COMMAND_TIMEOUT)?;
    ensure!(
        out.trim_end()
            == format!(
                "error: kill: task {task} runs cell {cell}: stop the cell instead ('cell stop {cell}')"
            ),
        "kill of a cell's task printed {out:?}"
    );
    node.command(&format!("cell stop {cell}"), COMMAND_TIMEOUT)?;
    // A spinner at the default priority (2, like cells) leaves the reactor its CPU: the
    // 10 ms tick events keep being consumed.
    let out = node.command("spawn spin", COMMAND_TIMEOUT)?;
    let spinner =
        task_id(&out).ok_or_else(|| HarnessError::Check(format!("no task id in {out:?}")))?;
    let before = consumed(node)?;
    std::thread::sleep(Duration::from_millis(1000));
    let after = consumed(node)?;
    ensure!(
        after >= before + 20,
        "the reactor consumed only {} events in a second beside a spinner",
        after - before
    );
    node.command(&format!("kill {spinner}"), COMMAND_TIMEOUT)?;
    Ok(())
}

fn task_id(out: &str) -> Option<u64> {
    out.split_whitespace()
        .skip_while(|w| *w != "task")
        .nth(1)?
        .parse()
        .ok()
}
