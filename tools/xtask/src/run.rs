//! `cargo xtask run`: one node with its console on this terminal.

use boot::Firmware;
use qemu_tests::qemu::NodeSpec;

use crate::image::{self, Flavor, Profile};
use crate::{setup, Flags};

/// Boots one node interactively.
pub fn cmd_run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args, &["--release", "--kvm"], &[])?;
    setup::ensure_qemu()?;
    let profile = if flags.has("--release") { Profile::Release } else { Profile::Debug };
    let image = image::build_image(profile, Flavor::Shell, Firmware::Bios)?;
    let dir = image::fresh_dir(&image::xylem_dir().join("run"))?;
    let mut spec = NodeSpec::worker(1, &image);
    spec.memory_mib = 128;
    spec.kvm = flags.has("--kvm");
    spec.extra_args = flags.passthrough.clone();
    let events = dir.join(format!("{}-events.log", spec.name));
    eprintln!("==> booting {} under {} (Ctrl-A x quits; events in {})", spec.name, if spec.kvm { "KVM" } else { "TCG" }, events.display());
    let status = spec.command("stdio", &events).status().map_err(|e| format!("starting QEMU: {e}"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(99) => Err("the kernel panicked (QEMU exit status 99)".into()),
        _ => Err(format!("QEMU exited with {status}")),
    }
}
