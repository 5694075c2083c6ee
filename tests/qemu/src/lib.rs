//! Xylem's QEMU test harness and scenarios.
//!
//! [`node::Node`] is one QEMU process: its COM1 console on a unix socket (send a line,
//! expect output with a timeout), its COM2 event log in a file ([`events`]), and its PID
//! for SIGKILL/SIGSTOP/SIGCONT. A `Node` kills its QEMU on drop, so no test leaves a VM
//! behind. [`scenarios`] holds the scenarios `cargo xtask test` and `cargo xtask
//! qemu-cluster` run; each returns `Ok` or a one-line reason.

pub mod certs;
pub mod cluster;
pub mod events;
pub mod fabric;
pub mod hostnet;
pub mod node;
pub mod qemu;
pub mod scenarios;

use std::fmt;
use std::path::PathBuf;

/// Where the built images are, and where runs keep their files.
#[derive(Clone, Debug)]
pub struct Env {
    /// The normal kernel's BIOS image.
    pub image: PathBuf,
    /// The kernel built with the in-kernel test runner.
    pub ktest_image: PathBuf,
    /// A directory for this run's sockets and logs (`target/xylem/…`).
    pub run_dir: PathBuf,
    /// Use KVM instead of TCG.
    pub kvm: bool,
}

/// Why a harness step failed.
#[derive(Debug)]
pub enum HarnessError {
    /// Starting QEMU or talking to it failed at the OS level.
    Io(String, std::io::Error),
    /// Expected text did not appear in time; carries the tail of what did.
    Timeout {
        waiting_for: String,
        seconds: f64,
        tail: String,
    },
    /// QEMU exited when it should not have.
    Exited { status: Option<i32>, tail: String },
    /// A check in a scenario failed.
    Check(String),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Io(what, e) => write!(f, "{what}: {e}"),
            HarnessError::Timeout {
                waiting_for,
                seconds,
                tail,
            } => {
                write!(f, "timed out after {seconds:.1} s waiting for {waiting_for:?}; last output: {tail:?}")
            }
            HarnessError::Exited { status, tail } => {
                write!(f, "QEMU exited (status {status:?}); last output: {tail:?}")
            }
            HarnessError::Check(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for HarnessError {}

/// Fails a scenario with a formatted reason unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        let holds: bool = $cond;
        if !holds {
            return Err($crate::HarnessError::Check(format!($($arg)*)));
        }
    };
}
