//! Making a fresh machine ready: QEMU from apt when missing (as root), else a clear message.

use std::process::Command;

const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Ensures `qemu-system-x86_64` is installed.
pub fn ensure_qemu() -> Result<(), String> {
    if qemu_tests::qemu::available() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "{} is not installed. Install Debian's '{QEMU_PACKAGE}' package (as root: apt-get install -y {QEMU_PACKAGE}) and run again.",
            qemu_tests::qemu::QEMU
        ));
    }
    eprintln!(
        "==> {} missing: installing {QEMU_PACKAGE} with apt-get (one time)",
        qemu_tests::qemu::QEMU
    );
    run_apt(&["update"])?;
    run_apt(&["install", "-y", "--no-install-recommends", QEMU_PACKAGE])?;
    if qemu_tests::qemu::available() {
        Ok(())
    } else {
        Err(format!(
            "installed {QEMU_PACKAGE} but {} still does not run",
            qemu_tests::qemu::QEMU
        ))
    }
}

fn run_apt(args: &[&str]) -> Result<(), String> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("running apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("apt-get {} failed ({status})", args.join(" ")))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
