//! The cluster side of the kernel: the glue that drives the sans-IO protocol machines
//! (`membership::swim`, and as they land `consensus` and the `xylem` control plane)
//! with real messages from the node transport and real time from the event queue's ticks.
//! Each driver is called only by the reactor, in event order.

pub mod consensus;
pub mod control;
pub mod frontdoor;
pub mod membership;
pub mod peers;
pub mod storage;
