//! Device drivers. Each owns its device's registers; `unsafe` stays inside them.

pub mod fw_cfg;
pub mod pci;
pub mod virtio;
