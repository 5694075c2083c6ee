//! Making a fresh machine ready: the Debian packages the tools need (QEMU, and OVMF for
//! the UEFI scenario) from apt when missing (as root), else a clear message.
//!
//! Only what is missing is installed, and nothing is ever removed: each package is checked
//! with `dpkg-query` first, apt-get is asked for exactly the missing ones, with
//! `--no-remove` (apt aborts rather than remove anything: on a fresh machine resolving
//! `qemu-system-x86` once replaced a newer `qemu-utils`) and no recommends.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Debian package a tool needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: &'static str,
    /// Why we need it, for messages.
    pub purpose: &'static str,
}

pub const QEMU: Package = Package {
    name: "qemu-system-x86",
    purpose: "qemu-system-x86_64 boots every scenario",
};

pub const OVMF: Package = Package {
    name: "ovmf",
    purpose: "the UEFI firmware that boots the UEFI image",
};

/// Where Debian's `ovmf` puts the combined (code and variables) firmware that QEMU takes
/// with `-bios`; the split `OVMF_CODE*.fd` files need pflash drives instead.
const OVMF_PATHS: [&str; 2] = ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd"];

/// Ensures `qemu-system-x86_64` is installed.
pub fn ensure_qemu() -> Result<(), String> {
    if qemu_tests::qemu::available() {
        return Ok(());
    }
    ensure_packages(&[QEMU])?;
    if qemu_tests::qemu::available() {
        Ok(())
    } else {
        Err(format!(
            "{} is installed but {} does not run",
            QEMU.name,
            qemu_tests::qemu::QEMU
        ))
    }
}

/// The OVMF firmware image (installs `ovmf` when missing and we are root).
pub fn ensure_ovmf() -> Result<PathBuf, String> {
    if let Some(path) = ovmf_path() {
        return Ok(path);
    }
    ensure_packages(&[OVMF])?;
    ovmf_path().ok_or_else(|| {
        format!(
            "{} is installed but no firmware in {OVMF_PATHS:?}",
            OVMF.name
        )
    })
}

/// The first OVMF firmware file present, if any.
pub fn ovmf_path() -> Option<PathBuf> {
    OVMF_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

/// Installs the packages of `wanted` that dpkg does not report installed; never removes.
pub fn ensure_packages(wanted: &[Package]) -> Result<(), String> {
    let todo = missing(wanted, is_installed);
    if todo.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = todo.iter().map(|p| p.name).collect();
    if !is_root() {
        let why: Vec<String> = todo
            .iter()
            .map(|p| format!("{} ({})", p.name, p.purpose))
            .collect();
        return Err(format!(
            "missing Debian packages: {}. As root: apt-get install --no-remove {}",
            why.join(", "),
            names.join(" ")
        ));
    }
    eprintln!("==> installing {} with apt-get (one time)", names.join(" "));
    run_apt(&["update"])?;
    run_apt(&install_args(&names))?;
    let still: Vec<&str> = missing(wanted, is_installed)
        .iter()
        .map(|p| p.name)
        .collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!("apt-get did not install {}", still.join(" ")))
    }
}

/// The packages of `wanted` for which `installed` says no, in order.
fn missing(wanted: &[Package], installed: impl Fn(&str) -> bool) -> Vec<Package> {
    wanted
        .iter()
        .copied()
        .filter(|p| !installed(p.name))
        .collect()
}

/// apt-get arguments installing exactly `names`: nothing removed, no recommends.
fn install_args<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["install", "-y", "--no-remove", "--no-install-recommends"];
    args.extend_from_slice(names);
    args
}

/// Whether dpkg has `name` installed (`Status: install ok installed`).
fn is_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|o| o.status.success() && status_installed(&String::from_utf8_lossy(&o.stdout)))
}

/// Parses dpkg-query's `${Status}`: want, error flag, state.
fn status_installed(status: &str) -> bool {
    let words: Vec<&str> = status.split_whitespace().collect();
    matches!(words[..], [_, "ok", "installed"])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_packages_are_asked_for() {
        let both = [QEMU, OVMF];
        assert_eq!(missing(&both, |_| true), vec![]);
        assert_eq!(missing(&both, |n| n == QEMU.name), vec![OVMF]);
        assert_eq!(missing(&both, |_| false), vec![QEMU, OVMF]);
    }

    #[test]
    fn install_never_removes_and_names_exactly_the_missing() {
        let args = install_args(&["ovmf"]);
        assert_eq!(
            args,
            [
                "install",
                "-y",
                "--no-remove",
                "--no-install-recommends",
                "ovmf"
            ]
        );
        for word in [
            "remove",
            "purge",
            "autoremove",
            "full-upgrade",
            "dist-upgrade",
        ] {
            assert!(!args.contains(&word), "{args:?}");
        }
    }

    #[test]
    fn dpkg_status_is_read_exactly() {
        assert!(status_installed("install ok installed"));
        assert!(!status_installed("deinstall ok config-files"));
        assert!(!status_installed("install ok half-installed"));
        assert!(!status_installed("unknown ok not-installed"));
        assert!(!status_installed(""));
    }

    /// The real check on this machine: QEMU runs every scenario here, so dpkg must know it.
    #[test]
    fn qemu_is_seen_installed_when_it_runs() {
        if qemu_tests::qemu::available() {
            assert!(is_installed(QEMU.name));
        } else {
            eprintln!("skipped: QEMU is not installed on this machine");
        }
        assert!(!is_installed("xylem-no-such-package"));
    }
}
