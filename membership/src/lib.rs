//! Who is alive and what the cluster agreed on.
//!
//! Two sans-IO state machines live here: [`swim`], the failure detector whose verdicts become
//! kernel events, and [`raft`], the consensus core that holds the cluster's desired state.
//! Both take time and messages as arguments and return actions; neither touches a clock,
//! a device or a global. The kernel drives them; `tests/sim/` simulates them.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod raft;
pub mod swim;

/// A node's numeric identity, as given to the kernel through fw_cfg.
pub type NodeId = u64;
