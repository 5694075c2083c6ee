//! The cell object: what Xylem supervises and moves.
//!
//! A cell is one running instance of a service: a ring-3 payload with its own address space.
//! This crate holds the pure parts; the kernel owns the hardware side and only drives them:
//!
//! * [`abi`]: the syscall ABI and user address-space layout shared with the payload runtime.
//! * [`elf`]: validation of payload ELF images into a load plan.
//! * [`spec`]: what a cell runs ([`spec::PayloadSpec`]) and its restart policy.
//! * [`lifecycle`]: the cell object, its state machine, exit reasons and accounting.
//! * [`supervise`]: the local restart policy (backoff, crash-loop gate), sans-IO.
//! * [`logbuf`]: bounded per-cell log capture.
//!
//! Architecture invariant: nothing here reads a clock, a device or a global; time is an
//! argument. Everything builds for the host and for `x86_64-unknown-none`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod abi;
pub mod elf;
pub mod lifecycle;
pub mod logbuf;
pub mod spec;
pub mod supervise;
