//! Finding QEMU and building its command line.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The QEMU binary name.
pub const QEMU: &str = "qemu-system-x86_64";

/// The isa-debug-exit statuses the kernel produces (see kernel/src/arch/x86_64/qemu.rs).
pub mod status {
    /// In-kernel tests passed.
    pub const TESTS_PASSED: i32 = 33;
    /// In-kernel tests failed.
    pub const TESTS_FAILED: i32 = 35;
    /// Kernel panic.
    pub const PANIC: i32 = 99;
}

/// How to boot one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub name: String,
    pub role: String,
    pub memory_mib: u32,
    pub image: PathBuf,
    /// More `key=value` pairs for the node's fw_cfg config string.
    pub config_extra: Vec<(String, String)>,
    /// Further fw_cfg files (name, contents).
    pub fw_cfg: Vec<(String, String)>,
    /// fw_cfg file items read from host files (name, path): the node's identity.
    pub fw_cfg_files: Vec<(String, PathBuf)>,
    /// Raw extra QEMU arguments.
    pub extra_args: Vec<String>,
    pub kvm: bool,
}

impl NodeSpec {
    /// A worker with 64 MiB, the footprint every scenario must pass with.
    pub fn worker(id: u64, image: &Path) -> NodeSpec {
        NodeSpec {
            id,
            name: format!("worker-{id}"),
            role: "worker".into(),
            memory_mib: 64,
            image: image.to_path_buf(),
            config_extra: Vec::new(),
            fw_cfg: Vec::new(),
            fw_cfg_files: Vec::new(),
            extra_args: Vec::new(),
            kvm: false,
        }
    }

    /// The node's fw_cfg config string. Space-separated, because QEMU's option parser
    /// would need every comma doubled.
    pub fn config_string(&self) -> String {
        let mut text = format!("id={} name={} role={}", self.id, self.name, self.role);
        for (key, value) in &self.config_extra {
            text.push_str(&format!(" {key}={value}"));
        }
        text
    }

    /// The QEMU command: console (COM1) on `console`, which may be a socket chardev spec or
    /// `stdio`; event log (COM2) into `events`.
    pub fn command(&self, console: &str, events: &Path) -> Command {
        let mut cmd = Command::new(QEMU);
        // The BIOS bootloader stage sets a VESA mode, so a VGA device must exist.
        cmd.args([
            "-nodefaults",
            "-vga",
            "std",
            "-display",
            "none",
            "-no-reboot",
        ]);
        cmd.args(["-m", &format!("{}M", self.memory_mib)]);
        cmd.args([
            "-drive",
            &format!(
                "format=raw,if=ide,snapshot=on,file={}",
                self.image.display()
            ),
        ]);
        cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        cmd.args([
            "-fw_cfg",
            &format!("name=opt/xylem/node,string={}", self.config_string()),
        ]);
        for (name, contents) in &self.fw_cfg {
            cmd.args(["-fw_cfg", &format!("name={name},string={contents}")]);
        }
        for (name, path) in &self.fw_cfg_files {
            cmd.args(["-fw_cfg", &format!("name={name},file={}", path.display())]);
        }
        if console == "stdio" {
            cmd.args(["-serial", "mon:stdio"]);
        } else {
            cmd.args(["-chardev", console, "-serial", "chardev:com1"]);
        }
        cmd.args(["-serial", &format!("file:{}", events.display())]);
        if self.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            // TCG's default CPU model (qemu64) has no RDRAND; the kernel needs it for TLS
            // key material (arch/x86_64/rng.rs). TCG emulates it (docs/security.md).
            cmd.args(["-accel", "tcg", "-cpu", "qemu64,+rdrand"]);
        }
        cmd.args(&self.extra_args);
        cmd
    }
}

/// Whether QEMU is on the PATH.
pub fn available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
