//! The lint tier of `cargo xtask test`: rustfmt and clippy over every crate, each a test.
//!
//! `cargo fmt --check` covers the workspace and the two ring-3 workspaces (`cell/runtime`,
//! `cell/payloads`), which share the root `rustfmt.toml`. Clippy runs with `-D warnings` on
//! the host crates (all targets, tests included) and on the kernel for its real target, in
//! both flavours (shell and `ktest`), since the kernel does not build for the host.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use crate::image::{self, cargo};
use crate::test::Tally;

/// Runs every lint, counting each as one test.
pub fn lints(tally: &mut Tally, payloads: &Path) {
    let root = crate::root();
    let fmt_dirs = [".", "cell/runtime", "cell/payloads"];
    for dir in fmt_dirs {
        check(
            tally,
            &format!("rustfmt ({dir})"),
            cargo()
                .current_dir(root.join(dir))
                .args(["fmt", "--all", "--check"]),
        );
    }
    check(
        tally,
        "clippy (host crates)",
        cargo().current_dir(&root).args([
            "clippy",
            "--workspace",
            "--exclude",
            "kernel",
            "--all-targets",
            "--release",
            "--",
            "-D",
            "warnings",
        ]),
    );
    for features in [None, Some("ktest")] {
        let mut cmd = cargo();
        cmd.current_dir(&root)
            .env("XYLEM_PAYLOAD_DIR", payloads)
            .args([
                "clippy",
                "--package",
                "kernel",
                "--target",
                "x86_64-unknown-none",
            ]);
        if let Some(f) = features {
            cmd.args(["--features", f]);
        }
        cmd.args(["--", "-D", "warnings"]);
        let name = format!(
            "clippy (kernel{})",
            features.map_or(String::new(), |f| format!(", {f}"))
        );
        check(tally, &name, &mut cmd);
    }
    check(
        tally,
        "clippy (ring-3 payloads)",
        cargo()
            .current_dir(root.join("cell/payloads"))
            .env("CARGO_TARGET_DIR", image::target_dir().join("payloads"))
            .args([
                "clippy",
                "--release",
                "--target",
                "x86_64-unknown-none",
                "--",
                "-D",
                "warnings",
            ]),
    );
    // The ring-3 side's host tests (the runtime's allocator and included ABI, the `http`
    // payload's protocol logic): standalone crates, so not part of the workspace's
    // `cargo test`. Counted here beside their lints.
    check(
        tally,
        "host tests (xylem-rt)",
        cargo()
            .current_dir(root.join("cell/runtime"))
            .env("CARGO_TARGET_DIR", image::target_dir().join("runtime-host"))
            .args(["test", "--release"]),
    );
    check(
        tally,
        "host tests (payloads lib)",
        cargo()
            .current_dir(root.join("cell/payloads"))
            .env(
                "CARGO_TARGET_DIR",
                image::target_dir().join("payloads-host"),
            )
            .args(["test", "--release", "--lib"]),
    );
}

/// Runs one lint command; its output is shown only when it fails.
fn check(tally: &mut Tally, name: &str, cmd: &mut std::process::Command) {
    let started = Instant::now();
    let output = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output();
    match output {
        Ok(o) if o.status.success() => {
            tally.passed += 1;
            println!("lint {name} ok ({:.1} s)", started.elapsed().as_secs_f64());
        }
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr).into_owned()
                + &String::from_utf8_lossy(&o.stdout);
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            for line in tail.into_iter().rev() {
                println!("    {line}");
            }
            println!("lint {name} FAILED");
            tally.fail(format!("lint {name}"));
        }
        Err(e) => tally.fail(format!("lint {name}: running cargo: {e}")),
    }
}
