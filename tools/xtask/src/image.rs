//! Building the kernel and its disk images.
//!
//! The kernel is a workspace member built for `x86_64-unknown-none` by a nested cargo. That
//! nested cargo must not inherit the outer one's `CARGO_*`/`RUST*` variables (hermit's
//! trap: e.g. `CARGO_ENCODED_RUSTFLAGS` or `RUSTC_WORKSPACE_WRAPPER` would leak host settings
//! into the kernel build), so they are removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use boot::Firmware;

/// Kernel build profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// Which kernel: the normal one (shell) or the in-kernel test runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Shell,
    Ktest,
}

/// `cargo xtask build`.
pub fn cmd_build(args: &crate::BuildArgs) -> Result<(), String> {
    let profile = if args.release {
        Profile::Release
    } else {
        Profile::Debug
    };
    let firmware = if args.uefi {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    let image = build_image(profile, Flavor::Shell, firmware)?;
    println!("{}", image.display());
    Ok(())
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `<root>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"))
}

/// Where xtask keeps its outputs.
pub fn xylem_dir() -> PathBuf {
    target_dir().join("xylem")
}

/// Builds the kernel and a disk image; returns the image path.
pub fn build_image(
    profile: Profile,
    flavor: Flavor,
    firmware: Firmware,
) -> Result<PathBuf, String> {
    let elf = build_kernel(profile, flavor)?;
    let suffix = match (flavor, firmware) {
        (Flavor::Shell, Firmware::Bios) => "bios.img",
        (Flavor::Shell, Firmware::Uefi) => "uefi.img",
        (Flavor::Ktest, Firmware::Bios) => "ktest-bios.img",
        (Flavor::Ktest, Firmware::Uefi) => "ktest-uefi.img",
    };
    let dir = xylem_dir().join("images").join(profile.dir());
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let image = dir.join(format!("xylem-{suffix}"));
    // Write beside it and rename: a QEMU still booting the previous image keeps reading its
    // own (now unlinked) file instead of one being rewritten under it.
    let partial = dir.join(format!(".xylem-{suffix}.{}", std::process::id()));
    boot::create_image(&elf, &partial, firmware).map_err(|e| e.to_string())?;
    std::fs::rename(&partial, &image)
        .map_err(|e| format!("installing {}: {e}", image.display()))?;
    Ok(image)
}

/// The full kernel ELF, with symbols and debug info, that `build_image` leaves beside the
/// image (the image holds a stripped copy): for gdb and llvm-addr2line.
pub fn full_elf(profile: Profile, flavor: Flavor) -> PathBuf {
    let name = match flavor {
        Flavor::Shell => "kernel",
        Flavor::Ktest => "kernel-ktest",
    };
    xylem_dir().join(format!("{name}-{}.elf", profile.dir()))
}

/// Builds the kernel ELF and copies it to `target/xylem/kernel-<flavor>-<profile>.elf`.
fn build_kernel(profile: Profile, flavor: Flavor) -> Result<PathBuf, String> {
    let root = crate::root();
    // The kernel embeds the ring-3 payloads, so they are built first.
    let payloads = build_payloads()?;
    let started = Instant::now();
    eprintln!("==> building kernel ({}, {:?})", profile.dir(), flavor);
    let mut cmd = cargo();
    cmd.current_dir(&root).env("XYLEM_PAYLOAD_DIR", &payloads);
    cmd.args([
        "build",
        "--package",
        "kernel",
        "--target",
        "x86_64-unknown-none",
    ]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    if flavor == Flavor::Ktest {
        cmd.args(["--features", "ktest"]);
    }
    let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("kernel build failed ({status})"));
    }
    let built = target_dir()
        .join("x86_64-unknown-none")
        .join(profile.dir())
        .join("kernel");
    let copy = full_elf(profile, flavor);
    let name = copy
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_suffix(&format!("-{}", profile.dir())))
        .ok_or("kernel ELF name")?
        .to_string();
    std::fs::create_dir_all(xylem_dir()).map_err(|e| format!("creating target/xylem: {e}"))?;
    std::fs::copy(&built, &copy).map_err(|e| format!("copying {}: {e}", built.display()))?;
    // The image gets a copy without debug info: the BIOS stage reads the kernel through
    // real-mode disk calls, which are slow under TCG, and debug info is most of the file.
    // The full ELF stays beside it for llvm-addr2line.
    let stripped = xylem_dir().join(format!("{name}-{}.stripped.elf", profile.dir()));
    strip_debug(&copy, &stripped)?;
    eprintln!(
        "    kernel built in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        copy.display()
    );
    Ok(stripped)
}

/// Writes `input` without debug sections to `output`, using the toolchain's llvm-objcopy
/// (component llvm-tools-preview, pinned in rust-toolchain.toml).
fn strip_debug(input: &Path, output: &Path) -> Result<(), String> {
    let sysroot = Command::new("rustc")
        .current_dir(crate::root())
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("running rustc --print sysroot: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let objcopy = Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-objcopy");
    let status = Command::new(&objcopy)
        .arg("--strip-debug")
        .arg(input)
        .arg(output)
        .status()
        .map_err(|e| {
            format!(
                "running {} (is llvm-tools-preview installed?): {e}",
                objcopy.display()
            )
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("llvm-objcopy --strip-debug failed ({status})"))
    }
}

/// A `cargo` command with the outer cargo's and rustc's variables removed.
pub fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars() {
        let keep = matches!(
            key.as_str(),
            "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_TERM_COLOR"
        );
        if (key.starts_with("CARGO_") && !keep)
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The images every QEMU run needs (release, BIOS): the shell kernel and the test kernel.
pub fn test_env(kvm: bool, run_name: &str) -> Result<qemu_tests::Env, String> {
    let image = build_image(Profile::Release, Flavor::Shell, Firmware::Bios)?;
    let ktest_image = build_image(Profile::Release, Flavor::Ktest, Firmware::Bios)?;
    // Not wiped as a whole: each scenario cleans its own subdirectory, so two runs of
    // different scenarios (or a run and a bench) never delete each other's sockets.
    // XYLEM_RUN_SUFFIX keeps concurrent runs (two developers, or a bench beside a test) in
    // separate directories.
    let suffix = std::env::var("XYLEM_RUN_SUFFIX").unwrap_or_default();
    let run_dir = xylem_dir().join(format!("{run_name}{suffix}"));
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| format!("creating {}: {e}", run_dir.display()))?;
    // The UEFI image is cheap once the kernel is built; OVMF is installed when missing
    // (as root). Without either, the boot-uefi scenario fails and says why.
    let uefi = match crate::setup::ensure_ovmf() {
        Ok(firmware) => Some(qemu_tests::UefiBoot {
            image: build_image(Profile::Release, Flavor::Shell, Firmware::Uefi)?,
            firmware,
        }),
        Err(err) => {
            eprintln!("    no UEFI boot: {err}");
            None
        }
    };
    Ok(qemu_tests::Env {
        image,
        ktest_image,
        kernel_elf: full_elf(Profile::Release, Flavor::Shell),
        run_dir,
        kvm,
        uefi,
    })
}

/// Empties and recreates a directory.
pub fn fresh_dir(dir: &Path) -> Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// Builds the ring-3 payload programs (`cell/payloads`, release) and returns the directory
/// holding their ELF files. They are a separate cargo workspace, built into
/// `target/payloads` so one `target/` holds everything.
pub fn build_payloads() -> Result<PathBuf, String> {
    let root = crate::root();
    let payload_target = target_dir().join("payloads");
    eprintln!("==> building cell payloads");
    let status = cargo()
        .current_dir(root.join("cell/payloads"))
        .args(["build", "--release", "--target", "x86_64-unknown-none"])
        .env("CARGO_TARGET_DIR", &payload_target)
        .status()
        .map_err(|e| format!("running cargo for payloads: {e}"))?;
    if !status.success() {
        return Err(format!("payload build failed ({status})"));
    }
    Ok(payload_target.join("x86_64-unknown-none/release"))
}
