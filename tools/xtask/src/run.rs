//! `cargo xtask run`: one node with its console on this terminal, or (`--nodes N`) a
//! cluster of N nodes on the fabric, node 1's console here and the others' logged.

use std::time::Duration;

use boot::Firmware;
use qemu_tests::cluster;
use qemu_tests::fabric::{Fabric, FabricConfig};
use qemu_tests::node::Node;
use qemu_tests::qemu::NodeSpec;

use crate::image::{self, Flavor, Profile};
use crate::{setup, RunArgs};

/// Boots one node interactively, or a cluster with `--nodes N`.
pub fn cmd_run(args: &RunArgs) -> Result<(), String> {
    setup::ensure_qemu()?;
    let profile = if args.release {
        Profile::Release
    } else {
        Profile::Debug
    };
    // clap bounds --nodes to 1..=16 (fabric addresses go up to .254; this bounds the host).
    let nodes = args.nodes.map(usize::from);
    let image = image::build_image(profile, Flavor::Shell, Firmware::Bios)?;
    let dir = image::fresh_dir(&image::xylem_dir().join("run"))?;
    match nodes {
        None => {
            let mut spec = NodeSpec::worker(1, &image);
            spec.memory_mib = 128;
            spec.kvm = args.kvm;
            spec.extra_args = args.qemu_args.clone();
            if args.gdb {
                let elf = image::full_elf(profile, Flavor::Shell);
                spec.extra_args.extend(gdb_stub_args(args.gdb_port));
                eprintln!("{}", gdb_instructions(&elf, args.gdb_port));
            }
            run_interactive(&spec, &dir)
        }
        Some(count) => run_cluster(&image, &dir, count, args),
    }
}

/// Starts the fabric and nodes 2..=N in the background, then node 1 on this terminal.
/// When node 1's QEMU exits, the others are killed and the fabric stops.
fn run_cluster(
    image: &std::path::Path,
    dir: &std::path::Path,
    count: usize,
    args: &RunArgs,
) -> Result<(), String> {
    let ids: Vec<u32> = (1..=count as u32).collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let fabric = Fabric::start(FabricConfig::new(dir, &ids, seed))
        .map_err(|e| format!("starting the fabric: {e:?}"))?;
    let mut specs = cluster::specs(image, &fabric, count, args.kvm);
    for spec in &mut specs {
        spec.extra_args.extend(args.qemu_args.iter().cloned());
    }
    let first = specs.remove(0);
    let mut others = Vec::new();
    for spec in specs {
        let name = spec.name.clone();
        let node = Node::start(spec, dir).map_err(|e| format!("starting {name}: {e}"))?;
        eprintln!(
            "==> {name} started (console log {})",
            dir.join(&name).join("console.log").display()
        );
        others.push(node);
    }
    // Let the others get going so node 1's first pings find them.
    for node in &mut others {
        let name = node.spec.name.clone();
        if let Err(e) = node.wait_for_prompt(Duration::from_secs(90)) {
            eprintln!("==> warning: {name} did not reach its prompt: {e}");
        }
    }
    let result = run_interactive(&first, dir);
    drop(others);
    eprintln!("{}", fabric.report());
    result
}

/// QEMU arguments: a GDB stub on 127.0.0.1:`port` only (plain `-s` listens on every
/// interface), and the CPU held at the first instruction until GDB says `continue`.
pub fn gdb_stub_args(port: u16) -> [String; 3] {
    ["-gdb".into(), format!("tcp:127.0.0.1:{port}"), "-S".into()]
}

/// What to type to attach: the full ELF (the image holds a stripped copy) and the command.
pub fn gdb_instructions(elf: &std::path::Path, port: u16) -> String {
    format!(
        "==> QEMU waits for GDB on 127.0.0.1:{port}\n    kernel with symbols: {elf} (loaded at {base:#x})\n    attach: gdb -ex 'symbol-file -o {base:#x} {elf}' -ex 'target remote 127.0.0.1:{port}' -ex 'hbreak *kernel::kmain' -ex continue",
        elf = elf.display(),
        base = qemu_tests::KERNEL_LOAD_BASE,
    )
}

fn run_interactive(spec: &NodeSpec, dir: &std::path::Path) -> Result<(), String> {
    let events = dir.join(format!("{}-events.log", spec.name));
    eprintln!(
        "==> booting {} under {} (Ctrl-A x quits; events in {})",
        spec.name,
        if spec.kvm { "KVM" } else { "TCG" },
        events.display()
    );
    let status = spec
        .command("stdio", &events)
        .status()
        .map_err(|e| format!("starting QEMU: {e}"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(99) => Err("the kernel panicked (QEMU exit status 99)".into()),
        _ => Err(format!("QEMU exited with {status}")),
    }
}
