//! Every QEMU scenario, by name. `cargo xtask test` runs the `Node` suite (single-node
//! kernel checks); `cargo xtask qemu-cluster` runs the `Cluster` suite.

mod kernel_tests;
mod shell;
mod tasks;

use crate::{Env, HarnessError};

/// Which run a scenario belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// One node: boot, shell, in-kernel tests, fault reports.
    Node,
    /// Several nodes on the fabric.
    Cluster,
}

/// A named scenario.
pub struct Scenario {
    pub name: &'static str,
    pub suite: Suite,
    pub run: fn(&Env) -> Result<(), HarnessError>,
}

/// All scenarios, in run order.
pub const ALL: &[Scenario] = &[
    Scenario { name: "ktest-all", suite: Suite::Node, run: kernel_tests::all },
    Scenario { name: "ktest-fatal-pagefault", suite: Suite::Node, run: kernel_tests::fatal_pagefault },
    Scenario { name: "ktest-fatal-panic", suite: Suite::Node, run: kernel_tests::fatal_panic },
    Scenario { name: "shell-basics", suite: Suite::Node, run: shell::basics },
    Scenario { name: "shell-line-editing", suite: Suite::Node, run: shell::line_editing },
    Scenario { name: "shell-tasks", suite: Suite::Node, run: tasks::spawn_and_kill },
];
