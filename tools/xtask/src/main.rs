//! `cargo xtask …`: build, run, test, demo and benchmark Xylem (matklad's xtask pattern).
//!
//! One module per subcommand. Paths come from `CARGO_MANIFEST_DIR`, and the nested kernel
//! build runs with cargo's and rustc's variables stripped (see `image.rs`).

mod bench;
mod bench_cluster;
mod bench_raft;
mod bench_trust;
mod demo;
mod image;
mod lint;
mod run;
mod setup;
mod test;
mod timeline;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Build, run, test, demo and benchmark Xylem.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version = None)]
#[command(about = "Build, run, test, demo and benchmark Xylem", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel and a bootable disk image; print its path.
    Build(BuildArgs),
    /// Boot one node with its console on this terminal (Ctrl-A x quits QEMU), or a cluster.
    Run(RunArgs),
    /// Every test: lints, host unit tests, in-kernel tests, QEMU scenarios; ends with
    /// 'N passed, N failed'.
    Test(TestArgs),
    /// The main job: a real failover on a three-node cluster, narrated (see README).
    Demo,
    /// The multi-node QEMU scenarios, heavy ones included.
    QemuCluster(ClusterArgs),
    /// One HTML picture of a cluster run (default: the newest under target/xylem/).
    Timeline(TimelineArgs),
    /// Benchmarks; each prints 'METRIC <name> <value> <unit>' lines.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

/// `cargo xtask build`.
#[derive(Args)]
pub struct BuildArgs {
    /// Optimised kernel (the tests and benchmarks use it).
    #[arg(long)]
    pub release: bool,
    /// A UEFI image instead of BIOS.
    #[arg(long)]
    pub uefi: bool,
}

/// `cargo xtask run`.
#[derive(Args)]
pub struct RunArgs {
    /// Optimised kernel.
    #[arg(long)]
    pub release: bool,
    /// Use KVM instead of TCG (slow under nested virtualisation).
    #[arg(long)]
    pub kvm: bool,
    /// N nodes on the fabric: node 1's console here, the others' logged under
    /// target/xylem/run/<name>/.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nodes: Option<u16>,
    /// Extra arguments for QEMU (after --).
    #[arg(last = true, value_name = "QEMU-ARGS")]
    pub qemu_args: Vec<String>,
}

/// `cargo xtask test`.
#[derive(Args)]
pub struct TestArgs {
    /// Run only this QEMU scenario (no lints or host tests).
    #[arg(long, value_name = "NAME")]
    pub scenario: Option<String>,
    /// Add the heavy suite (the five-node scenario).
    #[arg(long)]
    pub heavy: bool,
    /// Add the soak suite (20,000 Raft commands through 2 MiB disks, minutes long).
    #[arg(long)]
    pub soak: bool,
    /// Use KVM instead of TCG.
    #[arg(long)]
    pub kvm: bool,
}

/// `cargo xtask timeline`.
#[derive(Args)]
pub struct TimelineArgs {
    /// The run directory (one holding <node>/events.log); default: the newest run.
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: Option<std::path::PathBuf>,
    /// Also screenshot the page in headless Chromium (installed from apt when missing and
    /// root), next to it as timeline.png.
    #[arg(long)]
    pub screenshot: bool,
}

/// `cargo xtask qemu-cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    /// Run only this scenario.
    #[arg(long, value_name = "NAME")]
    pub scenario: Option<String>,
    /// Use KVM instead of TCG.
    #[arg(long)]
    pub kvm: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Build(args) => image::cmd_build(args),
        Command::Run(args) => run::cmd_run(args),
        Command::Test(args) => test::cmd_test(args),
        Command::Demo => demo::cmd_demo(),
        Command::QemuCluster(args) => test::cmd_qemu_cluster(args),
        Command::Timeline(args) => timeline::cmd_timeline(args),
        Command::Bench { which } => bench::cmd_bench(which),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("xtask: error: {why}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}
