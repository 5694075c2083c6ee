//! The kernel's hardware-free logic.
//!
//! Everything in the kernel that can be decided without touching hardware lives here, so it
//! builds for the host and is unit-tested with plain `cargo test`: the serial line editor,
//! the node identity parser for the fw_cfg string, and (as the scheduler grows) run-queue
//! policy, load averaging and the event ring. The kernel binary (`kernel/src`) only drives
//! these pieces with real bytes, ticks and interrupts.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod byte_ring;
pub mod crash_record;
pub mod dns;
pub mod event_ring;
pub mod fd_table;
pub mod frame_filter;
pub mod heap_plan;
pub mod line_editor;
pub mod line_ring;
pub mod load;
pub mod map_regions;
pub mod node_config;
pub mod peers;
pub mod rtc;
pub mod run_queue;
pub mod short_str;
