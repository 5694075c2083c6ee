//! `cargo xtask run`: one node with its console on this terminal, or (`--nodes N`) a
//! cluster of N nodes on the fabric, node 1's console here and the others' logged.
//! `--expose web:8080` adds the host gateway (docs/front-door.md): `curl
//! http://127.0.0.1:8080/` reaches the service `web` wherever its cells run.

use std::time::Duration;

use boot::Firmware;
use qemu_tests::cluster;
use qemu_tests::fabric::{Fabric, FabricConfig};
use qemu_tests::hostnet::gateway::{Gateway, Target};
use qemu_tests::hostnet::{self, HostNet};
use qemu_tests::node::Node;
use qemu_tests::qemu::NodeSpec;

use crate::image::{self, Flavor, Profile};
use crate::{setup, RunArgs};

/// One `--expose` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expose {
    pub service: String,
    pub host_port: u16,
    pub port: u16,
}

/// Parses `SERVICE:HOSTPORT[:PORT]`.
pub fn parse_expose(text: &str) -> Result<Expose, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |s: &str, what: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{what} '{s}' is not a port (1-65535)"))
    };
    match parts.as_slice() {
        [service, host] | [service, host, _] if !service.is_empty() => Ok(Expose {
            service: (*service).to_string(),
            host_port: number(host, "host port")?,
            port: match parts.get(2) {
                Some(p) => number(p, "service port")?,
                None => 80,
            },
        }),
        _ => Err(format!(
            "'{text}': expected SERVICE:HOSTPORT[:PORT], e.g. web:8080"
        )),
    }
}

/// The fabric port (and address `169.254.77.241`) of `run`'s gateway.
pub const GATEWAY_ID: u32 = 241;

/// Starts one gateway per `--expose` on a shared fabric port.
pub fn start_gateways(
    fabric_dir: &std::path::Path,
    exposes: &[Expose],
    nodes: usize,
) -> Result<(Option<HostNet>, Vec<Gateway>), String> {
    if exposes.is_empty() {
        return Ok((None, Vec::new()));
    }
    let net = HostNet::start(fabric_dir, GATEWAY_ID).map_err(|e| e.to_string())?;
    let dns_servers = (1..=nodes as u32)
        .map(hostnet::fabric_ip)
        .collect::<Vec<_>>();
    let mut gateways = Vec::new();
    for x in exposes {
        let listen = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, x.host_port);
        let target = Target {
            service: x.service.clone(),
            port: x.port,
            dns_servers: dns_servers.clone(),
        };
        let gw = Gateway::start(net.clone(), listen, target)
            .map_err(|e| format!("gateway on {listen}: {e}"))?;
        eprintln!(
            "==> gateway: http://{listen}/ -> {}.xylem port {} (fabric address {})",
            x.service,
            x.port,
            hostnet::fabric_ip(GATEWAY_ID)
        );
        gateways.push(gw);
    }
    Ok((Some(net), gateways))
}

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
        None if !args.expose.is_empty() => Err("--expose needs a cluster: add --nodes N".into()),
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
    let mut ids: Vec<u32> = (1..=count as u32).collect();
    if !args.expose.is_empty() {
        ids.push(GATEWAY_ID);
    }
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
    let (_net, _gateways) = start_gateways(dir, &args.expose, count)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_parses_and_refuses_nonsense() {
        assert_eq!(
            parse_expose("web:8080"),
            Ok(Expose {
                service: "web".into(),
                host_port: 8080,
                port: 80
            })
        );
        assert_eq!(parse_expose("api:9000:7000").unwrap().port, 7000);
        for bad in ["web", ":8080", "web:0", "web:x", "web:80:0", "a:1:2:3"] {
            assert!(parse_expose(bad).is_err(), "{bad}");
        }
    }
}
