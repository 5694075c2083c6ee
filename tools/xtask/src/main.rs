//! `cargo xtask …`: build, run, test, demo and benchmark Xylem (matklad's xtask pattern).
//!
//! One module per subcommand. Paths come from `CARGO_MANIFEST_DIR`, and the nested kernel
//! build runs with cargo's and rustc's variables stripped (see `image.rs`).

mod bench;
mod bench_cluster;
mod bench_raft;
mod demo;
mod image;
mod lint;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build [--release] [--uefi]      build the kernel and a bootable disk image; print its path
  run [--release] [--kvm] [--nodes N] [-- QEMU-ARGS...]
                                  boot one node with its console on this terminal
                                  (Ctrl-A x quits QEMU; the event log goes to target/xylem/run/);
                                  --nodes N: N nodes on the fabric, node 1 here, the others'
                                  consoles logged under target/xylem/run/<name>/
  test [--scenario NAME] [--heavy] run every test: host unit tests, in-kernel tests, QEMU scenarios;
                                  ends with 'N passed, N failed'
  demo                            the main job: boot a node and show the shell (see README)
  qemu-cluster [--scenario NAME]  run the multi-node QEMU scenarios
  bench boot                      METRIC boot_to_prompt_ms (median of 5 boots)
  bench net                       METRIC ping_rtt_us, transport_rtt_us (two nodes on the fabric)
  bench raft                      METRIC raft_commit_us, raft_failover_ms (3 voters, virtio-blk disks)
  help                            this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "build" => image::cmd_build(rest),
        "run" => run::cmd_run(rest),
        "test" => test::cmd_test(rest),
        "demo" => demo::cmd_demo(rest),
        "qemu-cluster" => test::cmd_qemu_cluster(rest),
        "bench" => bench::cmd_bench(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command '{other}'\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("xtask: error: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Command-line flags: `--name` switches and `--name value` options, rejecting unknowns.
pub struct Flags {
    switches: Vec<String>,
    values: Vec<(String, String)>,
    /// Everything after `--`.
    pub passthrough: Vec<String>,
}

impl Flags {
    /// Parses `args` given the allowed switches and value options.
    pub fn parse(args: &[String], switches: &[&str], options: &[&str]) -> Result<Flags, String> {
        let mut flags = Flags {
            switches: Vec::new(),
            values: Vec::new(),
            passthrough: Vec::new(),
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg == "--" {
                flags.passthrough = iter.cloned().collect();
                break;
            } else if switches.contains(&arg.as_str()) {
                flags.switches.push(arg.clone());
            } else if options.contains(&arg.as_str()) {
                let value = iter.next().ok_or_else(|| format!("{arg} needs a value"))?;
                flags.values.push((arg.clone(), value.clone()));
            } else {
                return Err(format!(
                    "unexpected argument '{arg}' (try 'cargo xtask help')"
                ));
            }
        }
        Ok(flags)
    }

    /// Whether a switch was given.
    pub fn has(&self, switch: &str) -> bool {
        self.switches.iter().any(|s| s == switch)
    }

    /// The value of an option.
    pub fn value(&self, option: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == option)
            .map(|(_, v)| v.as_str())
    }
}

/// The workspace root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}
