//! Who is alive: the SWIM failure detector.
//!
//! [`swim`] is a sans-IO state machine whose verdicts (up, suspect, down) become kernel events.
//! It takes time and messages as arguments and returns actions; it never touches a clock, a
//! device or a global. The kernel drives it; `tests/sim/swim` simulates it. What the cluster
//! *agreed on* lives in the `consensus` crate (Raft), which this crate never imports.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod swim;

/// A node's numeric identity, as given to the kernel through fw_cfg.
pub type NodeId = u64;
