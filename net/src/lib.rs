//! The node transport (lands with issue F4).
#![no_std]
#![forbid(unsafe_code)]
