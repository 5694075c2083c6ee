//! The control plane: services, desired state, placement, reconcile (lands with issue F7).
#![no_std]
#![forbid(unsafe_code)]
