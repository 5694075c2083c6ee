//! The serial shell: boot to a prompt, the basic commands, errors, line editing, poweroff.

use std::time::Duration;

use crate::node::Node;
use crate::qemu::NodeSpec;
use crate::{ensure, Env, HarnessError};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

fn boot(env: &Env, name: &str) -> Result<Node, HarnessError> {
    let mut spec = NodeSpec::worker(7, &env.image);
    spec.name = name.to_string();
    spec.kvm = env.kvm;
    let mut node = Node::start(spec, &env.run_dir)?;
    node.wait_for_prompt(BOOT_TIMEOUT)?;
    Ok(node)
}

/// Boot, identity from fw_cfg, `help`, `mem`, `uptime`, `echo`, an unknown command, bad
/// arguments, `poweroff` — each checked.
pub fn basics(env: &Env) -> Result<(), HarnessError> {
    let mut node = boot(env, "shell-basics")?;
    let boot = node.wait_event("boot event", COMMAND_TIMEOUT, |e| e.kind == "boot")?;
    ensure!(
        boot.node == "shell-basics" && boot.get("id") == Some("7"),
        "boot event carries the fw_cfg identity: {boot:?}"
    );

    let help = node.command("help", COMMAND_TIMEOUT)?;
    for cmd in ["help", "uptime", "mem", "poweroff", "echo"] {
        ensure!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "help does not list {cmd}: {help:?}"
        );
    }
    let mem = node.command("mem", COMMAND_TIMEOUT)?;
    ensure!(
        mem.contains("frames: total") && mem.contains("free") && mem.contains("heap:"),
        "mem output: {mem:?}"
    );
    let free = number_after(&mem, "free ")
        .ok_or_else(|| HarnessError::Check(format!("no free count in {mem:?}")))?;
    ensure!(free > 1000, "only {free} free frames on a 64 MiB node");

    let up = node.command("uptime", COMMAND_TIMEOUT)?;
    ensure!(
        up.starts_with("up ") && up.contains("ticks"),
        "uptime output: {up:?}"
    );
    let echo = node.command("echo hello   cluster", COMMAND_TIMEOUT)?;
    ensure!(echo.trim_end() == "hello cluster", "echo output: {echo:?}");

    let unknown = node.command("frobnicate now", COMMAND_TIMEOUT)?;
    ensure!(
        unknown.trim_end() == "error: unknown command 'frobnicate' (type 'help' for the list)",
        "unknown command: {unknown:?}"
    );
    let bad = node.command("mem --all", COMMAND_TIMEOUT)?;
    ensure!(
        bad.trim_end() == "error: usage: mem",
        "bad arguments: {bad:?}"
    );
    let empty = node.command("", COMMAND_TIMEOUT)?;
    ensure!(empty.trim().is_empty(), "empty line printed {empty:?}");

    node.send_line("poweroff")?;
    node.expect("powering off", COMMAND_TIMEOUT)?;
    let status = node.wait_exit(COMMAND_TIMEOUT)?;
    ensure!(
        status.code() == Some(0),
        "poweroff: QEMU exit status {:?}, expected 0 (ACPI S5)",
        status.code()
    );
    ensure!(
        node.events().iter().any(|e| e.kind == "poweroff"),
        "no poweroff event on COM2"
    );
    Ok(())
}

/// Backspace and Ctrl-C behave like a terminal user expects; escape sequences are ignored.
pub fn line_editing(env: &Env) -> Result<(), HarnessError> {
    let mut node = boot(env, "shell-editing")?;
    // "echx" + backspace + "o ok" runs "echo ok".
    node.send_bytes(b"echx\x7fo ok\r")?;
    let prompt = node.prompt();
    let out = node.expect(&prompt, COMMAND_TIMEOUT)?;
    ensure!(out.contains("\r\nok\r\n"), "backspace editing: {out:?}");
    // Ctrl-C discards a half-typed poweroff.
    node.send_bytes(b"powerof\x03")?;
    node.expect("^C", COMMAND_TIMEOUT)?;
    node.expect(&prompt, COMMAND_TIMEOUT)?;
    // An arrow key (ESC [ A) inside a line is dropped.
    node.send_bytes(b"ech\x1b[Ao hi\r")?;
    let out = node.expect(&prompt, COMMAND_TIMEOUT)?;
    ensure!(
        out.contains("\r\nhi\r\n"),
        "escape sequence not ignored: {out:?}"
    );
    let alive = node.command("uptime", COMMAND_TIMEOUT)?;
    ensure!(
        alive.starts_with("up "),
        "node not responsive after editing: {alive:?}"
    );
    Ok(())
}

/// The UEFI image under OVMF: boots to the prompt with its fw_cfg identity, `mem` sees the
/// memory the UEFI map gave it, `poweroff` exits QEMU cleanly (ACPI S5).
pub fn boot_uefi(env: &Env) -> Result<(), HarnessError> {
    let Some(uefi) = &env.uefi else {
        return Err(HarnessError::Check(
            "no UEFI image or OVMF firmware (as root the harness installs `ovmf`)".into(),
        ));
    };
    let mut spec = NodeSpec::worker(9, &uefi.image);
    spec.name = "boot-uefi".into();
    spec.kvm = env.kvm;
    spec.firmware = Some(uefi.firmware.clone());
    // The default 64 MiB, like every BIOS node: OVMF splits low memory so the largest usable
    // run is ~12 MiB, and the heap shrinks to fit it (mm::init logs that) instead of
    // refusing to boot.
    spec.memory_mib = 64;
    let mut node = Node::start(spec, &env.run_dir)?;
    node.wait_for_prompt(BOOT_TIMEOUT)?;
    let boot = node.wait_event("boot event", COMMAND_TIMEOUT, |e| e.kind == "boot")?;
    ensure!(
        boot.node == "boot-uefi" && boot.get("id") == Some("9"),
        "boot event carries the fw_cfg identity under UEFI: {boot:?}"
    );
    let mem = node.command("mem", COMMAND_TIMEOUT)?;
    ensure!(
        mem.contains("frames: total") && mem.contains("heap:"),
        "mem under UEFI: {mem:?}"
    );
    let heap_kib = boot.get("heap_kib").and_then(|v| v.parse::<u64>().ok());
    ensure!(
        heap_kib.is_some_and(|k| k >= 4096),
        "UEFI at 64 MiB boots with at least the 4 MiB minimum heap: {boot:?}"
    );
    node.send_line("poweroff")?;
    node.expect("powering off", COMMAND_TIMEOUT)?;
    let status = node.wait_exit(COMMAND_TIMEOUT)?;
    ensure!(
        status.code() == Some(0),
        "poweroff under UEFI: QEMU exit status {:?}, expected 0 (ACPI S5)",
        status.code()
    );
    Ok(())
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
