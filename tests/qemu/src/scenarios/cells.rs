//! Cells from the shell: every crasher mode ends only its cell, crash-looping supervision
//! with growing backoff, EFAULT for kernel pointers, frames returned, and clear errors.

use std::time::Duration;

use crate::events::Event;
use crate::node::Node;
use crate::qemu::NodeSpec;
use crate::{ensure, Env, HarnessError};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

fn boot(env: &Env, name: &str) -> Result<Node, HarnessError> {
    let mut spec = NodeSpec::worker(4, &env.image);
    spec.name = name.into();
    spec.kvm = env.kvm;
    let mut node = Node::start(spec, &env.run_dir)?;
    node.wait_for_prompt(BOOT_TIMEOUT)?;
    Ok(node)
}

fn cell_id(out: &str) -> Result<String, HarnessError> {
    out.strip_prefix("cell ")
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| HarnessError::Check(format!("no cell id in {out:?}")))
}

fn free_frames(node: &mut Node) -> Result<u64, HarnessError> {
    let mem = node.command("mem", COMMAND_TIMEOUT)?;
    mem.split("free ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| HarnessError::Check(format!("no free count in {mem:?}")))
}

fn wait_cell_exit(node: &Node, id: &str) -> Result<Event, HarnessError> {
    node.wait_event(&format!("cell_exit of cell {id}"), EVENT_TIMEOUT, |e| {
        e.kind == "cell_exit" && e.get("cell") == Some(id)
    })
}

/// Each crasher mode ends only its cell with the right reason; the node answers `mem`
/// afterwards and every frame comes back.
pub fn crashers(env: &Env) -> Result<(), HarnessError> {
    let mut node = boot(env, "cells-crashers")?;
    let baseline = free_frames(&mut node)?;
    for (mode, reason, key, value) in [
        ("pagefault", "faulted", "vector", "14(#PF)"),
        ("gpfault", "faulted", "vector", "13(#GP)"),
        ("invalid-opcode", "faulted", "vector", "6(#UD)"),
        ("divide-by-zero", "faulted", "vector", "0(#DE)"),
        ("wild-pointer", "exited", "code", "14"),
    ] {
        let out = node.command(&format!("cell run crasher {mode} 20"), COMMAND_TIMEOUT)?;
        let id = cell_id(&out)?;
        let exit = wait_cell_exit(&node, &id)?;
        ensure!(
            exit.get("reason") == Some(reason) && exit.get(key) == Some(value),
            "crasher {mode}: expected reason={reason} {key}={value}, got {exit:?}"
        );
        let up = node.command("uptime", COMMAND_TIMEOUT)?;
        ensure!(
            up.starts_with("up "),
            "node unresponsive after crasher {mode}: {up:?}"
        );
    }
    let logs = node.command("cell logs 5", COMMAND_TIMEOUT)?;
    ensure!(
        logs.contains("EFAULT (14)"),
        "wild-pointer cell did not see EFAULT: {logs:?}"
    );
    // A cell that never yields is preempted: the shell stays responsive, then stop ends it.
    let out = node.command("cell run crasher spin-forever 0", COMMAND_TIMEOUT)?;
    let id = cell_id(&out)?;
    std::thread::sleep(Duration::from_millis(500));
    let ls = node.command("cell ls", COMMAND_TIMEOUT)?;
    ensure!(
        ls.lines()
            .any(|l| l.split_whitespace().next() == Some(&id) && l.contains("running")),
        "spinner not running: {ls:?}"
    );
    let stopped = node.command(&format!("cell stop {id}"), COMMAND_TIMEOUT)?;
    ensure!(
        stopped.trim_end() == format!("cell {id} stopped"),
        "stop output: {stopped:?}"
    );
    let after = free_frames(&mut node)?;
    ensure!(
        after == baseline,
        "free frames {baseline} before the crashers, {after} after"
    );
    Ok(())
}

/// An on-failure crasher restarts with growing backoff and then trips the crash-loop gate.
pub fn crash_loop(env: &Env) -> Result<(), HarnessError> {
    let mut node = boot(env, "cells-crashloop")?;
    let out = node.command(
        "cell run crasher pagefault 10 --restart on-failure",
        COMMAND_TIMEOUT,
    )?;
    let id = cell_id(&out)?;
    node.wait_event("cell_crashloop", Duration::from_secs(30), |e| {
        e.kind == "cell_crashloop" && e.get("cell") == Some(&id)
    })?;
    let delays: Vec<u64> = node
        .events()
        .iter()
        .filter(|e| e.kind == "cell_restart" && e.get("cell") == Some(&id))
        .filter_map(|e| e.get("delay_ms")?.parse().ok())
        .collect();
    ensure!(
        delays.len() >= 3,
        "expected several restarts before the crash loop, got delays {delays:?}"
    );
    ensure!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "backoff does not grow: {delays:?}"
    );
    let ls = node.command("cell ls", COMMAND_TIMEOUT)?;
    ensure!(
        ls.lines()
            .any(|l| l.split_whitespace().next() == Some(&id) && l.contains("crash-loop")),
        "cell ls: {ls:?}"
    );
    // No more restarts once the gate tripped.
    let restarts_then = node
        .events()
        .iter()
        .filter(|e| e.kind == "cell_start" && e.get("cell") == Some(&id))
        .count();
    std::thread::sleep(Duration::from_millis(1500));
    let restarts_now = node
        .events()
        .iter()
        .filter(|e| e.kind == "cell_start" && e.get("cell") == Some(&id))
        .count();
    ensure!(
        restarts_now == restarts_then,
        "cell kept restarting after the crash loop ({restarts_then} -> {restarts_now})"
    );
    Ok(())
}

/// Bad `cell` commands print one clear error each and change nothing.
pub fn bad_commands(env: &Env) -> Result<(), HarnessError> {
    let mut node = boot(env, "cells-bad-commands")?;
    for (line, want) in [
        ("cell", "error: usage: cell run <payload> [args...] [--restart always|on-failure|never] [--memory-mib N] | cell ls | cell stop <id|svc/slot@epoch> | cell logs <id|svc/slot@epoch> [N]"),
        ("cell run nosuch", "error: cell: no payload named 'nosuch' (available: hello, crasher, spinner, counter, http, echo, memhog, sockhog, nettest)"),
        ("cell run hello --restart sometimes", "error: cell: restart policy 'sometimes' is not always, on-failure or never"),
        ("cell run hello --memory-mib 0", "error: cell: memory limit 0 MiB is outside 1..=4096 MiB"),
        ("cell run hello --memory-mib lots", "error: cell: memory limit 'lots' is not a number of MiB"),
        ("cell stop 42", "error: cell: no cell 42 (see 'cell ls')"),
        ("cell stop x", "error: cell: 'x' is neither a cell id nor a name like web/1@7 (see 'cell ls')"),
        ("cell stop web/0@3", "error: cell: no cell web/0@3 on this node (see 'xylem status' for where it runs)"),
        ("cell logs web/x@3", "error: cell: 'web/x@3' is neither a cell id nor a name like web/1@7 (see 'cell ls')"),
        ("cell logs 42", "error: cell: no cell 42 (see 'cell ls')"),
    ] {
        let out = node.command(line, COMMAND_TIMEOUT)?;
        ensure!(out.trim_end() == want, "{line:?} printed {out:?}, expected {want:?}");
    }
    let ls = node.command("cell ls", COMMAND_TIMEOUT)?;
    // The header and the finished-cells trailer, no rows.
    ensure!(
        ls.lines().count() == 2 && ls.contains("(0 finished cells listed"),
        "cells exist after only bad commands: {ls:?}"
    );
    Ok(())
}
