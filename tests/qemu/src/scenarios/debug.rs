//! Debugging tools that must tell the truth: `cargo xtask run --gdb`'s stub and symbols.
//!
//! The scenario starts a node the way `run --gdb` does (QEMU `-S`, a GDB stub on
//! 127.0.0.1 only), attaches `gdb -batch` with the full kernel ELF (its symbols offset by
//! the load base, since the kernel is position-independent), puts a hardware
//! breakpoint on `kmain`, lets the CPU go and checks that it stops exactly at the address
//! the ELF's symbol table gives: the symbols printed for the user are the running kernel's.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::qemu::NodeSpec;
use crate::{ensure, Env, HarnessError, KERNEL_LOAD_BASE};

/// The whole boot to `kmain` under TCG, with margin (the bootloader's disk reads are slow).
const GDB_TIMEOUT: Duration = Duration::from_secs(90);
/// The Rust path of the kernel's entry (see `entry_point!` in kernel/src/main.rs).
const ENTRY: &str = "kernel::kmain";

/// `run --gdb`: attach gdb, stop at `kmain`, read its address.
pub fn gdb_attach(env: &Env) -> Result<(), HarnessError> {
    ensure!(
        env.kernel_elf.is_file(),
        "no kernel ELF with symbols at {}",
        env.kernel_elf.display()
    );
    // A free port on the loopback only: bind, read it, release it for QEMU.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| HarnessError::Io("finding a free port".into(), e))?
        .port();
    let mut spec = NodeSpec::worker(5, &env.image);
    spec.name = "gdb-attach".into();
    spec.kvm = env.kvm;
    spec.extra_args = vec!["-gdb".into(), format!("tcp:127.0.0.1:{port}"), "-S".into()];
    let _node = Node::start(spec, &env.run_dir)?;
    let elf = env.kernel_elf.display().to_string();
    let out = run_gdb(&[
        "-batch",
        "-nx",
        "-ex",
        "set pagination off",
        "-ex",
        &format!("symbol-file -o {KERNEL_LOAD_BASE:#x} {elf}"),
        "-ex",
        &format!("target remote 127.0.0.1:{port}"),
        "-ex",
        &format!("info address {ENTRY}"),
        "-ex",
        &format!("hbreak *{ENTRY}"),
        "-ex",
        "continue",
        "-ex",
        "printf \"PC=%#lx\\n\", $pc",
        "-ex",
        &format!("printf \"SYM=%#lx\\n\", &{ENTRY}"),
        "-ex",
        "info symbol $pc",
    ])?;
    let hex = |key: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    };
    let (pc, sym) = (hex("PC="), hex("SYM="));
    ensure!(
        sym.is_some_and(|a| a > KERNEL_LOAD_BASE),
        "no address for {ENTRY} in the ELF above the load base: {out}"
    );
    ensure!(
        pc.is_some() && pc == sym,
        "the CPU did not stop at {ENTRY} ({sym:#x?}): pc {pc:#x?}; gdb said: {out}"
    );
    ensure!(
        out.contains("kmain"),
        "gdb does not name the stop kmain: {out}"
    );
    Ok(())
}

/// Runs gdb with `args`, killing it (by its PID, through `Child::kill`) after
/// [`GDB_TIMEOUT`]; returns stdout and stderr together.
fn run_gdb(args: &[&str]) -> Result<String, HarnessError> {
    let mut child = Command::new("gdb")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HarnessError::Io("starting gdb (is it installed?)".into(), e))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| HarnessError::Io("waiting for gdb".into(), e))?
        {
            break status;
        }
        if started.elapsed() > GDB_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HarnessError::Check(format!(
                "gdb did not finish within {GDB_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        let _ = pipe.read_to_string(&mut out);
    }
    ensure!(status.success(), "gdb failed ({status}): {out}");
    Ok(out)
}
